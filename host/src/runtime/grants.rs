//! What a handler may reach beyond its own memory, granted by its sidecar and
//! nothing by default: environment variables with set values, host
//! directories preopened at a guest path (read-only or read-write, through
//! cap-std, so `..` and symlinks cannot leave them), outbound TCP/UDP to
//! listed addresses (name lookup only when a listed host was a name), and
//! outbound HTTP to listed origins, and key-value buckets by name.

use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A host directory visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (`/data`).
    pub guest: String,
    /// Whether the guest may change it.
    pub write: bool,
}

/// Everything a handler is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Addresses the guest may connect to.
    pub net: Vec<SocketAddr>,
    /// Whether the guest may resolve host names.
    pub lookup: bool,
    /// Origins the guest may send HTTP requests to (`wasi:http`).
    pub http: Vec<super::egress::Origin>,
    /// Key-value buckets the guest may open (`wasi:keyvalue`).
    pub keyvalue: Vec<String>,
}

impl Grants {
    /// Adds the grants to a WASI context being built.
    pub(crate) fn apply(&self, wasi: &mut WasiCtxBuilder) -> std::io::Result<()> {
        for (key, value) in &self.env {
            wasi.env(key, value);
        }
        for dir in &self.dirs {
            let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
                std::io::Error::other(format!("cannot open the granted directory {}: {e:#}", dir.host.display()))
            })?;
        }
        if !self.net.is_empty() {
            let allowed = self.net.clone();
            wasi.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(self.lookup).socket_addr_check(
                move |addr, usage| {
                    let ok = match usage {
                        // The implicit bind of a connect is to the wildcard
                        // address; binding anything else is not granted.
                        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                            addr.ip().is_unspecified() && addr.port() == 0
                        }
                        _ => allowed.contains(&addr),
                    };
                    Box::pin(async move { ok })
                },
            );
        }
        Ok(())
    }
}

//! `hostile` — a service that tries, on request, what a handler must not be
//! able to do to its node or its host. The payload is a command:
//!
//! | payload | what it tries | reply |
//! |---|---|---|
//! | `read:PATH` | read a file | its contents |
//! | `write:PATH:TEXT` | write a file | `written` |
//! | `list:PATH` | list a directory | names, one per line |
//! | `env:NAME` | read an environment variable | its value |
//! | `connect:A.B.C.D:PORT` | open a TCP connection | `connected` |
//! | `resolve:NAME` | look a host name up | the addresses |
//! | `random:N` | ask for N random bytes | N |
//! | `reply:N` | return N bytes | N bytes |
//! | `flood:N` | print N lines to stdout | `flooded` |
//! | `recurse` | recurse without end | (stack overflow) |
//! | `sleep:MS` | sleep, i.e. wait in a host call | `slept` |
//! | `job:PATH:MS:FAILS` | append a line (its attempt) to PATH, work MS ms, then fail with `retry` while the attempt is at most FAILS | `done` |
//! | `storm:N` | dispatch `storm:N` to its own name N times, then fail | (failed: how many were accepted, refused as `overloaded`, `denied`) |
//!
//! A refused attempt comes back as a `failed` failure carrying the error.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/hostile.wasm`).

use busbar_guest::{Context, ErrorClass, Failure, Service, bus};
use wasi::sockets::network::{IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};

struct Hostile;

fn failed(what: &str, e: impl std::fmt::Debug) -> Failure {
    Failure::failed(format!("{what}: {e:?}"))
}

fn connect(target: &str) -> Result<Vec<u8>, Failure> {
    let addr: std::net::SocketAddrV4 = target.parse().map_err(|e| Failure::invalid(format!("{target}: {e}")))?;
    let network = wasi::sockets::instance_network::instance_network();
    let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
        .map_err(|e| failed("create-tcp-socket", e))?;
    let [a, b, c, d] = addr.ip().octets();
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: addr.port(), address: (a, b, c, d) });
    socket.start_connect(&network, remote).map_err(|e| failed("start-connect", e))?;
    loop {
        match socket.finish_connect() {
            Ok(_) => return Ok(b"connected".to_vec()),
            Err(wasi::sockets::network::ErrorCode::WouldBlock) => socket.subscribe().block(),
            Err(e) => return Err(failed("finish-connect", e)),
        }
    }
}

fn resolve(name: &str) -> Result<Vec<u8>, Failure> {
    let network = wasi::sockets::instance_network::instance_network();
    let stream =
        wasi::sockets::ip_name_lookup::resolve_addresses(&network, name).map_err(|e| failed("resolve-addresses", e))?;
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => found.push(format!("{a}.{b}.{c}.{d}")),
            Ok(Some(IpAddress::Ipv6(v6))) => found.push(format!("{v6:?}")),
            Ok(None) => return Ok(found.join("\n").into_bytes()),
            Err(wasi::sockets::network::ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(failed("resolve-next-address", e)),
        }
    }
}

/// Recurses with a frame the optimiser cannot remove, until the stack ends.
#[inline(never)]
#[allow(unconditional_recursion, reason = "the point: a stack overflow")]
fn deeper(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    deeper(n + 1) + frame[n as usize % 64]
}

fn number(text: &str) -> Result<u64, Failure> {
    text.trim().parse().map_err(|_| Failure::invalid(format!("`{text}` is not a number")))
}

impl Service for Hostile {
    fn handle(ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let text = String::from_utf8(payload).map_err(|_| Failure::invalid("the command is not UTF-8"))?;
        let (command, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match command {
            "read" => std::fs::read(arg).map_err(|e| failed(arg, e)),
            "write" => {
                let (path, content) = arg.split_once(':').unwrap_or((arg, ""));
                std::fs::write(path, content).map(|()| b"written".to_vec()).map_err(|e| failed(path, e))
            }
            "list" => {
                let entries = std::fs::read_dir(arg).map_err(|e| failed(arg, e))?;
                let mut names: Vec<String> =
                    entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                Ok(names.join("\n").into_bytes())
            }
            "env" => std::env::var(arg).map(String::into_bytes).map_err(|e| failed(arg, e)),
            "connect" => connect(arg),
            "resolve" => resolve(arg),
            "random" => Ok(wasi::random::random::get_random_bytes(number(arg)?).len().to_string().into_bytes()),
            "reply" => Ok(vec![b'x'; number(arg)? as usize]),
            "flood" => {
                for i in 0..number(arg)? {
                    println!("flood line {i} ..........................................................");
                }
                Ok(b"flooded".to_vec())
            }
            "recurse" => Ok(deeper(0).to_string().into_bytes()),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number(arg)?));
                Ok(b"slept".to_vec())
            }
            "job" => {
                let mut parts = arg.split(':');
                let (path, ms, fails) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"), parts.next().unwrap_or("0"));
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| failed(path, e))?;
                std::io::Write::write_all(&mut file, format!("{}\n", ctx.attempt).as_bytes()).map_err(|e| failed(path, e))?;
                let until = std::time::Instant::now() + std::time::Duration::from_millis(number(ms)?);
                while std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                if u64::from(ctx.attempt) <= number(fails)? {
                    return Err(Failure::retry(format!("attempt {} of `{path}` fails on purpose", ctx.attempt)));
                }
                Ok(b"done".to_vec())
            }
            "storm" => {
                let (mut accepted, mut overloaded, mut denied) = (0, 0, 0);
                for _ in 0..number(arg)? {
                    match bus::dispatch(&ctx.name, text.as_bytes()) {
                        Ok(()) => accepted += 1,
                        Err(e) if e.class == ErrorClass::Overloaded => overloaded += 1,
                        Err(e) if e.class == ErrorClass::Denied => denied += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(Failure::failed(format!("storm: {accepted} accepted, {overloaded} overloaded, {denied} denied")))
            }
            other => Err(Failure::invalid(format!("unknown command `{other}`"))),
        }
    }
}

busbar_guest::export_service!(Hostile);

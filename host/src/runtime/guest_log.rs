//! Guest stdout and stderr, turned into `tracing` events tagged with the
//! handler name, one event per line. Output past a per-invocation cap is
//! dropped with one note, and past a per-handler budget over time
//! ([`crate::ops::lograte`]) it is left out with a count, so a chatty guest
//! cannot flood the node's log.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output one invocation may log per stream before the rest is dropped.
const CAP: usize = 64 * 1024;

/// Which standard stream a [`GuestLog`] stands for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout = 0,
    Stderr = 1,
}

/// One guest stream of one invocation; both streams of a store share one
/// allocation (a store is made per invocation: one allocation, not two).
#[derive(Clone)]
pub(crate) struct GuestLog {
    both: Arc<Mutex<[Lines; 2]>>,
    stream: Stream,
}

struct Lines {
    handler: Arc<str>,
    stream: Stream,
    pending: Vec<u8>,
    written: usize,
}

impl GuestLog {
    /// The stdout and stderr of an invocation of `handler`.
    pub(crate) fn pair(handler: Arc<str>) -> [GuestLog; 2] {
        let lines = |stream| Lines { handler: handler.clone(), stream, pending: Vec::new(), written: 0 };
        let both = Arc::new(Mutex::new([lines(Stream::Stdout), lines(Stream::Stderr)]));
        [GuestLog { both: both.clone(), stream: Stream::Stdout }, GuestLog { both, stream: Stream::Stderr }]
    }

    /// Ends an invocation's output: emits the unfinished line and resets
    /// the allowance for the next invocation of a reused store.
    pub(crate) fn finish(&self) {
        let mut both = crate::sync::lock(&self.both);
        let lines = &mut both[self.stream as usize];
        lines.flush();
        lines.written = 0;
    }

    fn write(&self, bytes: &[u8]) {
        crate::sync::lock(&self.both)[self.stream as usize].push(bytes);
    }
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) {
        let room = CAP.saturating_sub(self.written);
        let taken = &bytes[..bytes.len().min(room)];
        self.written += bytes.len();
        self.pending.extend_from_slice(taken);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        if taken.len() < bytes.len() && room > 0 {
            self.flush();
            if let Some(left_out) = crate::ops::lograte::line("output capped", &self.handler) {
                tracing::warn!(target: "busbar::guest", handler = &*self.handler, "guest output past {CAP} bytes dropped for this invocation{left_out}");
            }
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }

    fn emit(&self, line: &[u8]) {
        let stream = match self.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let Some(left_out) = crate::ops::lograte::output(stream, &self.handler, line.len().max(1)) else { return };
        if left_out.0 > 0 {
            tracing::warn!(target: "busbar::guest", handler = &*self.handler, stream, "{} lines of {stream} left out of the log: past the handler's {} per {:?}", left_out.0, crate::units::human_bytes(crate::ops::lograte::OUTPUT_BYTES), crate::ops::lograte::WINDOW);
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "busbar::guest", handler = &*self.handler, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "busbar::guest", handler = &*self.handler, stream = "stderr", "{text}")
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CAP)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        GuestLog::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

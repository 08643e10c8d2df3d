//! A bounded pipe for a reducer's stdout and stderr: keeps the first bytes
//! for diagnostics and silently drops the rest, so a chatty reducer neither
//! grows the host's memory nor fails because its output is full.

use std::sync::{Arc, Mutex};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Output the guest may always write in one go; anything beyond the kept
/// capacity is accepted and discarded.
const WRITE_BUDGET: usize = 64 << 10;

/// Shared, truncating capture of a guest's output.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    capacity: usize,
    kept: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// What was kept, lossily decoded.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept.lock().expect("output lock")).into_owned()
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests use this path; they are not accepted, but the
        // trait asks for it. A plain bounded pipe is enough.
        Box::new(MemoryOutputPipe::new(self.capacity))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut kept = self.kept.lock().expect("output lock");
        let room = self.capacity.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

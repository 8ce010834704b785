//! The server's log writer. Lines gather in a buffer that is written to
//! stderr when it fills and every [`FLUSH_EVERY`] by a thread of its own,
//! so logging a request wakes no thread (a queue with a writer thread woke
//! it for nearly every line: 0.2 context switches per request under load).
//! A line reaches stderr at most [`FLUSH_EVERY`] after it is logged; a
//! process killed with SIGKILL loses at most that much of its log, never
//! data. Dropping the [`Flusher`] writes out what is left.

use std::io::{BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What `tracing_subscriber` writes lines to: each line is written into
/// the buffer under its lock.
#[derive(Clone)]
pub struct Writer(Arc<Mutex<BufWriter<Stderr>>>);

/// One line's hold on the buffer.
pub struct Line<'a>(MutexGuard<'a, BufWriter<Stderr>>);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    /// The flusher's job, not the line's.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(self.lock())
    }
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, BufWriter<Stderr>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Flushes the buffer every [`FLUSH_EVERY`] and when dropped.
pub struct Flusher {
    writer: Writer,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A buffered stderr and the thread that flushes it.
pub fn buffered_stderr() -> (Writer, Flusher) {
    let writer = Writer(Arc::new(Mutex::new(BufWriter::with_capacity(
        64 * 1024,
        std::io::stderr(),
    ))));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = {
        let writer = writer.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(FLUSH_EVERY)
                {
                    flush(&writer);
                }
            })
            .ok()
    };
    let flusher = Flusher {
        writer: writer.clone(),
        stop: Some(stop),
        thread,
    };
    (writer, flusher)
}

fn flush(writer: &Writer) {
    // Nothing to tell if stderr is gone.
    let _ = writer.lock().flush();
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        flush(&self.writer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[test]
    fn a_line_is_written_out_within_the_flush_interval_and_at_drop() {
        let (writer, flusher) = buffered_stderr();
        writer
            .make_writer()
            .write_all(b"log.rs test line\n")
            .expect("a line fits the buffer");
        assert!(!writer.lock().buffer().is_empty());
        let deadline = std::time::Instant::now() + 50 * FLUSH_EVERY;
        while !writer.lock().buffer().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(FLUSH_EVERY / 10);
        }
        writer
            .make_writer()
            .write_all(b"log.rs second line\n")
            .expect("a line fits the buffer");
        drop(flusher);
        assert!(writer.lock().buffer().is_empty());
    }
}

//! The client's threads (`--threads`): each runs a single-threaded tokio
//! runtime with its share of the clients, as wrk runs one event loop per
//! thread. A client always runs on the same thread, so its connection, its
//! timer and its task stay there: no work stealing, and no wake-ups between
//! threads for every answer. In A/B runs against one server sharing 2 cores
//! with the client, one multi-threaded runtime with the same number of
//! workers got 20 to 35% fewer requests per second at about the same CPU
//! per request (its profile: parking and waking workers).

use std::future::Future;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Starts `n` threads, each with its runtime.
    pub fn start(n: usize) -> Result<Workers, String> {
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            let thread = std::thread::Builder::new()
                .name(format!("bench-{i}"))
                .spawn(move || {
                    // Runs the spawned clients until told to stop.
                    let _ = runtime.block_on(stopped);
                })
                .map_err(|e| format!("cannot start a client thread: {e}"))?;
            workers.threads.push((stop, thread));
        }
        Ok(workers)
    }

    /// How many threads.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Runs `future` on client `index`'s thread (thread `index` for an
    /// index below [`Workers::len`]).
    pub fn spawn<F>(&self, index: usize, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index % self.handles.len()].spawn(future)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

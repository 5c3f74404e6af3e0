//! [`PluginRuntime`]: the plugin's own tokio runtime, for backend plugins that do I/O.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use devbatch_core::DeviceError;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// A multi-threaded tokio runtime owned by a plugin, started on first use and never shut down
/// (the plugin's library is never unloaded). Declare one as a `static` in the plugin crate.
///
/// A plugin is a separate copy of every crate it uses, tokio included. The host polls the
/// plugin's futures on the host's runtime threads, but the plugin's copy of tokio keeps its
/// "current runtime" in its own thread-locals, which the host's runtime never sets: in plugin
/// code, `tokio::runtime::Handle::try_current()` fails, and anything that needs a reactor or a
/// timer (`tokio::net`, `tokio::process`, `tokio::fs`, `tokio::time::sleep`, `tokio::spawn`)
/// panics with "there is no reactor running". Code that only needs wakers (`tokio::sync`
/// channels, mutexes, `Notify`, awaiting a `JoinHandle`) works anywhere.
///
/// So a plugin that does I/O runs it on a runtime of its own, created on first use, and awaits
/// the result from the host's side through a `JoinHandle`:
///
/// ```
/// use devbatch_core::{Command, CommandOutput, DeviceError};
/// use devbatch_plugin::PluginRuntime;
///
/// static IO: PluginRuntime = PluginRuntime::new("my-plugin-io", 1);
///
/// // In the plugin's `impl Device`:
/// async fn run(command: &Command) -> Result<CommandOutput, DeviceError> {
///     let command = command.clone();
///     IO.spawn(async move {
///         // Here tokio's reactor and timer are those of the plugin's runtime.
///         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///         Ok(CommandOutput { exit_code: 0, stdout: command.to_shell_line().into(), stderr: vec![] })
///     })
///     .await?
/// }
/// # // A "host" runtime without reactor or timer: the work still runs, on `IO`.
/// # let host = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # let out = host.block_on(run(&Command::shell("true"))).unwrap();
/// # assert_eq!(out.stdout, b"true");
/// ```
///
/// Dropping the future [`spawn`](Self::spawn) returns (the engine does, on a timeout or a
/// cancellation) aborts the task on the plugin's runtime, so the work stops as it would on the
/// host's runtime.
#[derive(Debug)]
pub struct PluginRuntime {
    thread_name: &'static str,
    worker_threads: usize,
    runtime: OnceLock<Result<Runtime, String>>,
}

impl PluginRuntime {
    /// A runtime whose threads are called `thread_name`, with `worker_threads` workers (one
    /// is plenty for I/O-bound work; blocking calls such as `tokio::fs` use tokio's separate
    /// blocking pool).
    pub const fn new(thread_name: &'static str, worker_threads: usize) -> Self {
        PluginRuntime {
            thread_name,
            worker_threads,
            runtime: OnceLock::new(),
        }
    }

    /// The runtime's handle, starting it if needed. Fails (as an I/O error) only if the
    /// runtime could not start (no threads could be spawned).
    pub fn handle(&self) -> Result<&Handle, DeviceError> {
        let runtime = self.runtime.get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(self.worker_threads.max(1))
                .thread_name(self.thread_name)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        });
        match runtime {
            Ok(rt) => Ok(rt.handle()),
            Err(e) => Err(DeviceError::io(
                format!("start the {} runtime", self.thread_name),
                std::io::Error::other(e.clone()),
            )),
        }
    }

    /// Runs `future` on this runtime and waits for its output from wherever the caller is
    /// polled (the host's runtime). Dropping the returned future aborts the task. A panic in
    /// the task is raised again in the caller, inside the plugin, where the plugin's guards
    /// catch it.
    pub async fn spawn<F>(&self, future: F) -> Result<F::Output, DeviceError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.handle()?.spawn(future);
        match (AbortOnDrop(handle)).await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(DeviceError::Cancelled),
        }
    }
}

/// A `JoinHandle` that aborts its task when dropped before the task finished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The [`Device`] trait backends implement, the command and output types it speaks in, and the
//! [`DeviceExt`] helpers built on top of it.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{DeviceError, OperationFailure};
use crate::operation::{OperationContext, Params};

/// A device's labels: free `key=value` pairs from the pool file or the backend, used to select
/// devices (`--select os=android`).
pub type Labels = BTreeMap<String, String>;

/// Something a device can do. Operations declare which ones they need; a device without one
/// gets an `unsupported` outcome instead of a confusing failure half-way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// Run commands ([`Device::run`]).
    Exec,
    /// Receive files ([`Device::push`]).
    Push,
    /// Send files ([`Device::pull`]).
    Pull,
    /// Restart ([`Device::reboot`]).
    Reboot,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Exec => "exec",
            Capability::Push => "push",
            Capability::Pull => "pull",
            Capability::Reboot => "reboot",
        })
    }
}

/// Whether a device can take work right now, as far as its backend knows without trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    /// Ready, or not known to be otherwise (an SSH host is only tried when used).
    Ready,
    /// Listed, but every operation on it will fail until the operator acts.
    NotReady {
        /// The backend's word for the state (`offline`, `unauthorized`, ...).
        state: String,
        /// What to do about it.
        hint: String,
    },
}

impl DeviceState {
    /// The short word shown in `devbatch devices`.
    pub fn as_str(&self) -> &str {
        match self {
            DeviceState::Ready => "ready",
            DeviceState::NotReady { state, .. } => state,
        }
    }
}

/// What to run: an argument vector (each argument kept literal) or a shell command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Program and arguments. Backends that can only take a command line quote each argument
    /// with [`quote`], so no argument can inject a second command.
    Argv(Vec<String>),
    /// A command line for the device's shell (`sh -c`).
    Shell(String),
}

/// A command to run on a device, with its input and output cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What to run.
    pub program: Program,
    /// Bytes to feed to its standard input, then end of input. `None`: empty input.
    pub stdin: Option<Vec<u8>>,
    /// Most bytes of stdout plus stderr to keep. Past it the command fails with
    /// [`DeviceError::OutputLimit`] and the stream is closed.
    pub max_output: usize,
}

/// The output cap used when a caller does not set one: 4 MiB per device.
pub const DEFAULT_MAX_OUTPUT: usize = 4 * 1024 * 1024;

impl Command {
    /// A shell command line.
    pub fn shell(line: impl Into<String>) -> Self {
        Command {
            program: Program::Shell(line.into()),
            stdin: None,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// A program and its arguments, each kept literal.
    pub fn argv<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command {
            program: Program::Argv(args.into_iter().map(Into::into).collect()),
            stdin: None,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// Feeds these bytes to standard input.
    pub fn with_stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Sets the output cap.
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// The command as one line for a POSIX shell: a shell program as written, an argv with
    /// every argument single-quoted.
    pub fn to_shell_line(&self) -> String {
        match &self.program {
            Program::Shell(line) => line.clone(),
            Program::Argv(args) => args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
        }
    }
}

/// Quotes one argument for a POSIX shell so that it stays one literal word, whatever it holds.
///
/// Words made only of safe characters are left alone; anything else is wrapped in single quotes
/// with embedded single quotes written as `'\''`. A word with `=` is always quoted: unquoted as
/// the first word (`X=1 echo hi`) the shell would take it as a variable assignment instead of
/// the program to run, as a backend that runs argv directly (local) does.
pub fn quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+:,./-_".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status (0 to 255 on POSIX devices).
    pub exit_code: i32,
    /// Standard output, exactly as sent.
    pub stdout: Vec<u8>,
    /// Standard error, exactly as sent. Empty where the device merges the two.
    pub stderr: Vec<u8>,
}

/// Collects a command's output while enforcing the output cap: backends feed chunks as they
/// arrive and stop reading when it returns an error.
#[derive(Debug)]
pub struct OutputCollector {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl OutputCollector {
    /// A collector that holds at most `limit` bytes of stdout plus stderr.
    pub fn new(limit: usize) -> Self {
        OutputCollector {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn room(&self) -> usize {
        self.limit
            .saturating_sub(self.stdout.len() + self.stderr.len())
    }

    /// Appends stdout bytes; fails with [`DeviceError::OutputLimit`] past the cap.
    pub fn stdout(&mut self, chunk: &[u8]) -> Result<(), DeviceError> {
        if chunk.len() > self.room() {
            return Err(DeviceError::OutputLimit { limit: self.limit });
        }
        self.stdout.extend_from_slice(chunk);
        Ok(())
    }

    /// Appends stderr bytes; fails with [`DeviceError::OutputLimit`] past the cap.
    pub fn stderr(&mut self, chunk: &[u8]) -> Result<(), DeviceError> {
        if chunk.len() > self.room() {
            return Err(DeviceError::OutputLimit { limit: self.limit });
        }
        self.stderr.extend_from_slice(chunk);
        Ok(())
    }

    /// The stdout collected so far.
    pub fn stdout_bytes(&self) -> &[u8] {
        &self.stdout
    }

    /// The finished output with its exit code.
    pub fn finish(self, exit_code: i32) -> CommandOutput {
        CommandOutput {
            exit_code,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// How much a push or pull moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStats {
    /// Regular files transferred.
    pub files: u64,
    /// Bytes of file content transferred.
    pub bytes: u64,
    /// Entries of a copied folder that were left out because they are neither regular files
    /// nor folders: FIFOs, sockets, device nodes, and symbolic links where the backend does not
    /// follow them (see each backend's docs). Each one is logged as a warning with its path.
    #[serde(default)]
    pub skipped: u64,
}

/// What a device should reboot into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootMode {
    /// The normal system.
    #[default]
    System,
    /// The bootloader (Android).
    Bootloader,
    /// Recovery (Android).
    Recovery,
}

/// One device: something with an id that can run commands and move files.
///
/// Backends implement only these primitives; operations ([`crate::Operation`]) are written
/// against them, so every operation works on every backend that has the primitives it needs.
/// Helpers that only combine primitives live on [`DeviceExt`] and are not for backends to
/// override.
///
/// # Cancellation
///
/// The engine enforces timeouts and cancellation by dropping the future of an operation.
/// Every `async fn` here must therefore be cancel-safe in the resource sense: dropping it
/// closes sockets and channels and stops local child processes (spawn them with
/// `kill_on_drop`). Where the remote side can be told to stop (an SSH channel, an adb stream),
/// dropping should do that too.
#[async_trait]
pub trait Device: Any + Send + Sync + fmt::Debug {
    /// The id, unique in its pool.
    fn id(&self) -> &str;

    /// The backend's name (`adb`, `ssh`, `local`, `mock`, or a plugin's).
    fn backend(&self) -> &str;

    /// Labels used to select devices.
    fn labels(&self) -> &Labels;

    /// What this device can do.
    fn capabilities(&self) -> &[Capability];

    /// Whether the device can take work, as far as is known without trying.
    fn state(&self) -> DeviceState {
        DeviceState::Ready
    }

    /// Runs a command to completion and returns its exit code and output. A non-zero exit is
    /// not an error here; a command that could not finish (link lost, killed by a signal) is.
    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError>;

    /// Copies a local file or directory (recursively) to `remote`, which names the copy itself,
    /// not the folder to put it in. Missing folders above `remote` are created.
    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError>;

    /// Copies a remote file or directory (recursively) to `local`. A pull that breaks leaves
    /// nothing under the final `local` name.
    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError>;

    /// Restarts the device. With `wait`, returns only once the device is back and usable.
    /// Backends without a way to reboot keep this default, which fails closed as unsupported.
    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        let _ = (mode, wait);
        Err(DeviceError::Unsupported(format!(
            "the {} backend cannot reboot devices",
            self.backend()
        )))
    }

    /// Lets the device answer an operation itself, before (and instead of) the operation's
    /// implementation. This is how mock devices play any operation with scripted results,
    /// errors, hangs and panics; real backends keep the default, which answers nothing.
    async fn intercept(
        &self,
        operation: &str,
        params: &Params,
        ctx: &OperationContext,
    ) -> Option<Result<serde_json::Value, OperationFailure>> {
        let _ = (operation, params, ctx);
        None
    }

    /// Releases what the device holds open (connections). Called by
    /// [`BatchOperationManager::shutdown`](crate::BatchOperationManager::shutdown).
    async fn close(&self) {}
}

impl dyn Device {
    /// The concrete device, for operations that only make sense on one backend.
    pub fn downcast_ref<T: Device>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }

    /// Whether the device has every capability in `needed`; the first missing one otherwise.
    pub fn missing_capability(&self, needed: &[Capability]) -> Option<Capability> {
        needed
            .iter()
            .copied()
            .find(|c| !self.capabilities().contains(c))
    }
}

/// Helpers built only from [`Device`] primitives, for every device.
#[async_trait]
pub trait DeviceExt: Device {
    /// Runs a shell command line and returns its output whatever the exit code.
    async fn shell(&self, line: &str) -> Result<CommandOutput, DeviceError> {
        self.run(&Command::shell(line)).await
    }

    /// Runs a shell command line and returns its stdout as text with trailing whitespace
    /// trimmed; a non-zero exit is [`DeviceError::Failed`] naming the code and stderr.
    async fn shell_text(&self, line: &str) -> Result<String, DeviceError> {
        let out = self.shell(line).await?;
        if out.exit_code != 0 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(DeviceError::Failed(format!(
                "`{line}` exited with status {}{}{}",
                out.exit_code,
                if stderr.trim().is_empty() { "" } else { ": " },
                stderr.trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

impl<T: Device + ?Sized> DeviceExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_hostile_arguments_literal() {
        assert_eq!(quote("plain-word_1.txt"), "plain-word_1.txt");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("x; rm -rf /"), "'x; rm -rf /'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(id)`id`"), "'$(id)`id`'");
    }

    #[test]
    fn words_with_equals_are_quoted_so_they_are_never_assignments() {
        assert_eq!(quote("X=1"), "'X=1'");
        assert_eq!(quote("--opt=v"), "'--opt=v'");
        assert_eq!(quote("="), "'='");
        let cmd = Command::argv(["X=1", "echo", "hi"]);
        assert_eq!(cmd.to_shell_line(), "'X=1' echo hi");
    }

    #[test]
    fn argv_becomes_a_quoted_line() {
        let cmd = Command::argv(["echo", "a b", "$HOME"]);
        assert_eq!(cmd.to_shell_line(), "echo 'a b' '$HOME'");
    }

    #[test]
    fn collector_enforces_the_cap_across_both_streams() {
        let mut c = OutputCollector::new(10);
        c.stdout(b"12345").unwrap();
        c.stderr(b"1234").unwrap();
        let err = c.stdout(b"xx").unwrap_err();
        assert_eq!(
            err.to_string(),
            "output exceeded the per-device limit of 10 bytes"
        );
        c.stdout(b"x").unwrap();
        let out = c.finish(3);
        assert_eq!(out.stdout, b"12345x");
        assert_eq!(out.stderr, b"1234");
        assert_eq!(out.exit_code, 3);
    }
}

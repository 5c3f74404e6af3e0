//! Android tools simulated inside the device shell (`getprop`, ...).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use crate::device::{Shared, StreamIo};

/// Scripted behaviour of the simulated tools.
#[derive(Debug, Default)]
pub(crate) struct Scripts {}

const GETPROP: &str = r#"#!/bin/sh
# adbd-sim: getprop [KEY [DEFAULT]]
f="$ADBD_SIM_CTL/props"
if [ $# -eq 0 ]; then
  while IFS= read -r line; do printf '[%s]: [%s]\n' "${line%%=*}" "${line#*=}"; done < "$f"
  exit 0
fi
while IFS= read -r line; do
  if [ "${line%%=*}" = "$1" ]; then printf '%s\n' "${line#*=}"; exit 0; fi
done < "$f"
printf '%s\n' "${2-}"
"#;

/// Writes the tool scripts into the control directory's `bin/`.
pub(crate) fn install(shared: &Shared) -> io::Result<()> {
    let bin = shared.ctl.join("bin");
    std::fs::create_dir_all(&bin)?;
    for (name, text) in [("getprop", GETPROP)] {
        let path = bin.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Starts the server that answers tool calls made from device shells.
pub(crate) fn spawn_call_server(_shared: Arc<Shared>) -> io::Result<()> {
    Ok(())
}

/// `abb_exec:` (Android binder bridge, raw output).
pub(crate) async fn run_abb_exec(_shared: &Arc<Shared>, io: StreamIo, args: Vec<String>) -> io::Result<()> {
    io.writer.write(format!("abb: unknown service {:?}\n", args.first()).as_bytes()).await
}

//! The simulated package manager: installed packages, APK validation and scripted install outcomes.

use std::collections::BTreeMap;

use crate::apk::parse_apk;

/// What the next installs on a device do (see [`crate::SimHandle::set_install_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InstallOutcome {
    /// Validate the APK and install it (the default). Invalid APKs fail with
    /// `Failure [INSTALL_PARSE_FAILED_...]`, lower version codes with `INSTALL_FAILED_VERSION_DOWNGRADE`.
    #[default]
    Install,
    /// Print `Failure [CODE]` on stdout and exit with `exit_status` (0 by default: Android tools often exit
    /// 0 on failure, and a client must read the text).
    Failure {
        /// The code, optionally with a message: `INSTALL_FAILED_INSUFFICIENT_STORAGE`.
        code: String,
        /// The exit status of `pm`/`cmd` (only visible through shell protocol v2).
        exit_status: u8,
    },
    /// Print a multi-line Java exception (no `Failure` line at all) on stderr and exit with `exit_status`.
    Exception {
        /// The whole text.
        text: String,
        /// The exit status.
        exit_status: u8,
    },
}

impl InstallOutcome {
    /// `Failure [CODE]` with exit status 0.
    pub fn failure(code: impl Into<String>) -> InstallOutcome {
        InstallOutcome::Failure { code: code.into(), exit_status: 0 }
    }

    /// A `SecurityException` trace, as a device management policy or a broken package service prints it,
    /// with exit status 255.
    pub fn exception() -> InstallOutcome {
        InstallOutcome::Exception {
            text: "Exception occurred while executing 'install':\n\
                   java.lang.SecurityException: Installs from this shell are blocked by device policy\n\
                   \tat com.android.server.pm.PackageInstallerService.createSessionInternal(PackageInstallerService.java:738)\n\
                   \tat com.android.server.pm.PackageInstallerService.createSession(PackageInstallerService.java:632)\n\
                   \tat com.android.server.pm.PackageManagerShellCommand.doCreateSession(PackageManagerShellCommand.java:3362)\n\
                   \tat com.android.server.pm.PackageManagerShellCommand.doRunInstall(PackageManagerShellCommand.java:1497)\n\
                   \tat com.android.server.pm.PackageManagerShellCommand.runInstall(PackageManagerShellCommand.java:1461)\n\
                   \tat com.android.modules.utils.BasicShellCommandHandler.exec(BasicShellCommandHandler.java:97)\n"
                .to_string(),
            exit_status: 255,
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Installed {
    pub(crate) version_code: u64,
}

/// Installed packages of one device and its scripted outcome.
#[derive(Debug)]
pub(crate) struct PackageManager {
    pub(crate) packages: BTreeMap<String, Installed>,
    pub(crate) outcome: InstallOutcome,
    next_session: u32,
    /// install-multiple sessions: id -> APK bytes written so far.
    sessions: BTreeMap<u32, Vec<u8>>,
}

impl Default for PackageManager {
    fn default() -> PackageManager {
        let mut packages = BTreeMap::new();
        for system in ["android", "com.android.shell", "com.android.systemui", "com.android.settings"] {
            packages.insert(system.to_string(), Installed { version_code: 34 });
        }
        PackageManager { packages, outcome: InstallOutcome::Install, next_session: 1001, sessions: BTreeMap::new() }
    }
}

/// Options of `pm install`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InstallFlags {
    pub(crate) replace: bool,
    pub(crate) downgrade: bool,
}

/// The text a tool prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Reply {
    pub(crate) out: String,
    pub(crate) err: String,
    pub(crate) status: u8,
}

impl Reply {
    pub(crate) fn out(text: impl Into<String>, status: u8) -> Reply {
        Reply { out: text.into(), err: String::new(), status }
    }

    pub(crate) fn err(text: impl Into<String>, status: u8) -> Reply {
        Reply { out: String::new(), err: text.into(), status }
    }
}

impl PackageManager {
    /// Installs an APK. `legacy`: a pre-Android-7 package manager (no implicit replace).
    pub(crate) fn install(&mut self, apk: &[u8], flags: InstallFlags, legacy: bool) -> (Reply, Option<String>) {
        match &self.outcome {
            InstallOutcome::Install => {}
            InstallOutcome::Failure { code, exit_status } => {
                return (Reply::out(format!("Failure [{code}]\n"), *exit_status), None);
            }
            InstallOutcome::Exception { text, exit_status } => return (Reply::err(text.clone(), *exit_status), None),
        }
        let info = match parse_apk(apk) {
            Ok(info) => info,
            Err(err) => return (Reply::out(format!("Failure [{}: {}]\n", err.code, err.message), 1), None),
        };
        if let Some(code) = &info.fail_with {
            return (Reply::out(format!("Failure [{code}]\n"), 1), None);
        }
        if let Some(existing) = self.packages.get(&info.package) {
            if legacy && !flags.replace {
                return (
                    Reply::out(
                        format!("Failure [INSTALL_FAILED_ALREADY_EXISTS: Attempt to re-install {} without first uninstalling.]\n", info.package),
                        1,
                    ),
                    None,
                );
            }
            if existing.version_code > info.version_code && !flags.downgrade {
                return (
                    Reply::out(
                        format!(
                            "Failure [INSTALL_FAILED_VERSION_DOWNGRADE: Downgrade detected: Update version code {} is older than current {}]\n",
                            info.version_code, existing.version_code
                        ),
                        1,
                    ),
                    None,
                );
            }
        }
        self.packages.insert(info.package.clone(), Installed { version_code: info.version_code });
        (Reply::out("Success\n", 0), Some(info.package))
    }

    pub(crate) fn uninstall(&mut self, package: &str) -> Reply {
        if self.packages.remove(package).is_some() {
            Reply::out("Success\n", 0)
        } else {
            Reply::out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n", 1)
        }
    }

    pub(crate) fn create_session(&mut self) -> u32 {
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(id, Vec::new());
        id
    }

    pub(crate) fn write_session(&mut self, id: u32, data: &[u8]) -> bool {
        match self.sessions.get_mut(&id) {
            Some(buf) if buf.is_empty() => {
                buf.extend_from_slice(data);
                true
            }
            // Split APKs: only the base APK matters to the simulator.
            Some(_) => true,
            None => false,
        }
    }

    pub(crate) fn take_session(&mut self, id: u32) -> Option<Vec<u8>> {
        self.sessions.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::TestApk;

    #[test]
    fn install_validates_and_refuses_downgrades() {
        let mut pm = PackageManager::default();
        let v2 = TestApk::new("com.x").version_code(2).build();
        let v1 = TestApk::new("com.x").version_code(1).build();
        let flags = InstallFlags::default();
        assert_eq!(pm.install(&v2, flags, false), (Reply::out("Success\n", 0), Some("com.x".into())));
        let (reply, pkg) = pm.install(&v1, flags, false);
        assert!(reply.out.starts_with("Failure [INSTALL_FAILED_VERSION_DOWNGRADE"), "{reply:?}");
        assert_eq!((reply.status, pkg), (1, None));
        let (reply, _) = pm.install(&v1, InstallFlags { downgrade: true, ..flags }, false);
        assert_eq!(reply.out, "Success\n");
        let (reply, _) = pm.install(&v1, flags, true);
        assert!(reply.out.starts_with("Failure [INSTALL_FAILED_ALREADY_EXISTS"), "{reply:?}");
        let (reply, _) = pm.install(b"not a zip", flags, false);
        assert!(reply.out.starts_with("Failure [INSTALL_PARSE_FAILED_NOT_APK"), "{reply:?}");
        pm.outcome = InstallOutcome::failure("INSTALL_FAILED_INSUFFICIENT_STORAGE");
        assert_eq!(pm.install(&v2, flags, false).0, Reply::out("Failure [INSTALL_FAILED_INSUFFICIENT_STORAGE]\n", 0));
        assert_eq!(pm.uninstall("com.x").out, "Success\n");
        assert_eq!(pm.uninstall("com.x"), Reply::out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n", 1));
    }
}

//! A small ext4 filesystem on a loop device, for a data dir that can fill up (scenario S12).
//! Needs root (mount); unmounted (lazily) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

pub struct LoopFs {
    mount: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl LoopFs {
    /// Creates a `mib` MiB image, formats it and mounts it at `mount` (created if missing).
    pub fn mount_at(mount: &Path, mib: u64) -> Result<Self> {
        let image_dir = tempfile::tempdir()?;
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)?.set_len(mib << 20)?;
        run("mkfs.ext4", &["-q", "-F", path_str(&image)])?;
        std::fs::create_dir_all(mount)?;
        run("mount", &["-o", "loop", path_str(&image), path_str(mount)])?;
        Ok(Self {
            mount: mount.to_path_buf(),
            _image_dir: image_dir,
        })
    }

    /// Where a ballast file that takes up space lives (next to the data, on the same fs).
    pub fn ballast(&self) -> PathBuf {
        self.mount.join("ballast")
    }

    /// Bytes free for an unprivileged writer.
    pub fn available(&self) -> Result<u64> {
        let s = rustix::fs::statvfs(&self.mount)?;
        Ok(s.f_bavail * s.f_frsize)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", path_str(&self.mount)]);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| program.to_string())?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

//! The power-loss filesystem itself: what was synced survives a cut, nothing else does
//! (needs root and /dev/fuse).

use std::io::Write;
use std::os::unix::fs::FileExt;

use robustness::powerfs::PowerFs;

#[test]
fn a_power_cut_keeps_exactly_what_was_synced() {
    let backing = tempfile::tempdir().expect("backing");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let mut fs = PowerFs::mount(backing.path(), mnt.path()).expect("mount");
    let a = mnt.path().join("a");
    let mut f = std::fs::File::create(&a).expect("create a");
    f.write_all(b"synced").expect("write");
    f.sync_data().expect("fdatasync");
    f.write_all(b" and lost").expect("write");
    f.write_all_at(b"S", 0).expect("overwrite");
    drop(f);
    std::fs::create_dir(mnt.path().join("dir")).expect("mkdir");
    let mut b = std::fs::File::create(mnt.path().join("dir/b.tmp")).expect("create b");
    b.write_all(b"kept ").expect("write b");
    b.sync_data().expect("fdatasync b");
    std::fs::rename(mnt.path().join("dir/b.tmp"), mnt.path().join("dir/b")).expect("rename");
    // Written through the handle opened before the rename (as the log writes its segments).
    b.write_all(b"lost").expect("write b");
    drop(b);
    let c = std::fs::File::create(mnt.path().join("c")).expect("create c");
    c.set_len(4096).expect("extend c");
    c.sync_all().expect("fsync c");
    c.set_len(100).expect("shrink c");
    drop(c);
    assert_eq!(std::fs::read(&a).expect("read a"), b"Synced and lost");

    let lost = fs.cut().expect("cut the power");
    assert_eq!(lost, 3, "a, dir/b and c had unsynced writes");
    assert_eq!(std::fs::read(&a).expect("read a"), b"synced");
    assert_eq!(
        std::fs::read(mnt.path().join("dir/b")).expect("read b"),
        b"kept "
    );
    assert_eq!(
        std::fs::metadata(mnt.path().join("c")).expect("c").len(),
        4096
    );
    // And it goes on working after the cut.
    std::fs::write(mnt.path().join("d"), b"after").expect("write d");
    assert_eq!(
        std::fs::read(mnt.path().join("d")).expect("read d"),
        b"after"
    );
}

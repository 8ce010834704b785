//! The harness itself through a real mount: what a cut keeps is what was
//! synced by the rules in the crate's docs, nothing more and nothing less.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use powercut::Mount;

struct Dirs {
    _root: tempfile::TempDir,
    backing: PathBuf,
    point: PathBuf,
}

fn dirs() -> Option<Dirs> {
    if let Some(why) = powercut::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    let root = tempfile::tempdir().expect("dir");
    let (backing, point) = (root.path().join("backing"), root.path().join("mnt"));
    fs::create_dir_all(&backing).expect("backing");
    fs::create_dir_all(&point).expect("mount point");
    Some(Dirs {
        _root: root,
        backing,
        point,
    })
}

fn sync_dir(path: &std::path::Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

#[test]
fn only_synced_data_and_synced_names_survive_a_cut() {
    let Some(d) = dirs() else { return };
    let mount = Mount::new(&d.backing, &d.point).expect("mount");
    let p = |name: &str| d.point.join(name);

    // Named durably and its data synced: kept whole.
    let mut kept = File::create(p("kept")).expect("create");
    kept.write_all(b"synced").expect("write");
    kept.sync_data().expect("fdatasync");
    // Written after the sync: forgotten.
    kept.write_all(b" and not").expect("write");
    // Data synced, name never: lost.
    let mut nameless = File::create(p("nameless-later")).expect("create");
    nameless.write_all(b"x").expect("write");
    sync_dir(&d.point);
    fs::create_dir(p("sub")).expect("mkdir");
    let mut orphan = File::create(p("sub/orphan")).expect("create");
    orphan.write_all(b"orphan").expect("write");
    orphan.sync_all().expect("fsync");
    sync_dir(&p("sub")); // sub's own entries, but sub is not named durably
    drop((kept, nameless, orphan));
    assert_eq!(fs::read(p("kept")).expect("read"), b"synced and not");
    let before = mount.stats();
    assert!(
        before.file_syncs >= 2 && before.dir_syncs >= 2,
        "{before:?}"
    );

    mount.cut().expect("cut");
    assert!(
        fs::read(p("kept")).is_err(),
        "every operation fails after a cut"
    );
    let mount = mount.remount().expect("remount");
    assert_eq!(fs::read(p("kept")).expect("read"), b"synced");
    assert_eq!(
        fs::read(p("nameless-later")).expect("read"),
        b"",
        "the name was synced before its data was"
    );
    assert!(!p("sub").exists(), "sub was never named durably");
    mount.unmount().expect("unmount");
    assert_eq!(
        fs::read(d.backing.join("kept")).expect("backing"),
        b"synced"
    );
}

#[test]
fn a_rename_over_a_file_is_undone_unless_the_directory_was_synced() {
    let Some(d) = dirs() else { return };
    fs::write(d.backing.join("config"), b"v1").expect("seed");
    let mount = Mount::new(&d.backing, &d.point).expect("mount");
    let (tmp, config) = (d.point.join("config.tmp"), d.point.join("config"));

    let mut file = File::create(&tmp).expect("create");
    file.write_all(b"v2").expect("write");
    file.sync_all().expect("fsync");
    fs::rename(&tmp, &config).expect("rename");
    drop(file);
    assert_eq!(fs::read(&config).expect("read"), b"v2");
    let mount = mount.remount().expect("remount");
    assert_eq!(fs::read(&config).expect("read"), b"v1", "rename not synced");
    assert!(!tmp.exists());

    let mut file = File::create(&tmp).expect("create");
    file.write_all(b"v3").expect("write");
    file.sync_all().expect("fsync");
    fs::rename(&tmp, &config).expect("rename");
    drop(file);
    sync_dir(&d.point);
    let mount = mount.remount().expect("remount");
    assert_eq!(fs::read(&config).expect("read"), b"v3");
    mount.unmount().expect("unmount");
}

#[test]
fn unlink_truncate_and_overwrite_follow_the_same_rules() {
    let Some(d) = dirs() else { return };
    fs::write(d.backing.join("gone"), b"still here").expect("seed");
    fs::write(d.backing.join("log"), b"0123456789").expect("seed");
    let mount = Mount::new(&d.backing, &d.point).expect("mount");
    fs::remove_file(d.point.join("gone")).expect("unlink");
    let log = OpenOptions::new()
        .write(true)
        .open(d.point.join("log"))
        .expect("open");
    log.set_len(4).expect("truncate");
    log.sync_data().expect("fdatasync");
    std::os::unix::fs::FileExt::write_at(&log, b"AB", 0).expect("overwrite");
    drop(log);
    let mount = mount.remount().expect("remount");
    assert_eq!(
        fs::read(d.point.join("gone")).expect("read"),
        b"still here",
        "the unlink was not synced"
    );
    assert_eq!(fs::read(d.point.join("log")).expect("read"), b"0123");
    mount.unmount().expect("unmount");
}

#[test]
fn a_unix_socket_can_be_bound_and_reached_and_is_gone_after_a_cut() {
    let Some(d) = dirs() else { return };
    let mount = Mount::new(&d.backing, &d.point).expect("mount");
    let path = d.point.join("admin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    sync_dir(&d.point);
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    client.write_all(b"hi").expect("send");
    let (mut server, _) = listener.accept().expect("accept");
    let mut got = [0u8; 2];
    std::io::Read::read_exact(&mut server, &mut got).expect("receive");
    assert_eq!(&got, b"hi");
    drop((client, server, listener));
    let mount = mount.remount().expect("remount");
    assert!(!path.exists());
    mount.unmount().expect("unmount");
}

#[test]
fn a_clean_unmount_keeps_what_was_never_synced() {
    let Some(d) = dirs() else { return };
    let mount = Mount::new(&d.backing, &d.point).expect("mount");
    fs::create_dir(d.point.join("d")).expect("mkdir");
    fs::write(d.point.join("d/f"), b"written").expect("write");
    mount.unmount().expect("unmount");
    assert_eq!(
        fs::read(d.backing.join("d/f")).expect("backing"),
        b"written"
    );
    let mount = Mount::new(&d.backing, &d.point).expect("mount again");
    assert_eq!(fs::read(d.point.join("d/f")).expect("read"), b"written");
    mount.unmount().expect("unmount");
}

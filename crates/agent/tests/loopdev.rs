//! Writes to real block devices: a loop device with an MBR table holding two 8 MiB
//! partitions (slots A and B). Runs only as root where loop devices work; otherwise each
//! test prints why it is skipped and returns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::server::ImageServer;
use common::*;
use osroll_agent::boot::grubenv::GrubBoot;
use osroll_agent::host::real::{RealHost, RealHostConfig};
use osroll_agent::install::{Create, ImageSpec, InstallOptions, Installer};
use osroll_agent::simhost::image_bytes;
use osroll_agent::source::file::FileSource;
use osroll_api::ProgressPhase;

const MIB: u64 = 1 << 20;
const P1: u64 = MIB; // slot A: bytes [1 MiB, 9 MiB)
const P2: u64 = 9 * MIB; // slot B: bytes [9 MiB, 17 MiB)
const PART: u64 = 8 * MIB;
const DISK: u64 = 20 * MIB;

/// A loop device over a file with two partitions; detached on drop.
struct Disk {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    dev: String,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Disk {
    /// Set up the disk, or say why not.
    fn new() -> Result<Disk, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let backing = dir.path().join("disk.img");
        let mut mbr = vec![0u8; 512];
        for (i, start) in [P1, P2].into_iter().enumerate() {
            let e = 446 + 16 * i;
            mbr[e + 4] = 0x83;
            mbr[e + 8..e + 12].copy_from_slice(&((start / 512) as u32).to_le_bytes());
            mbr[e + 12..e + 16].copy_from_slice(&((PART / 512) as u32).to_le_bytes());
        }
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        std::fs::write(&backing, &mbr).map_err(|e| e.to_string())?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&backing)
            .map_err(|e| e.to_string())?;
        f.set_len(DISK).map_err(|e| e.to_string())?;
        // Slot A holds the running v1 system.
        std::os::unix::fs::FileExt::write_all_at(&f, &image_bytes("v1", PART as usize), P1)
            .map_err(|e| e.to_string())?;
        drop(f);
        let dev = run(
            "losetup",
            &["--find", "--show", "--partscan", backing.to_str().unwrap()],
        )
        .map_err(|e| format!("loop devices unavailable: {e}"))?;
        let disk = Disk {
            _dir: dir,
            backing,
            dev,
        };
        if !Path::new(&disk.part(2)).exists() {
            // Kernels without MBR parsing: add the partitions explicitly.
            run("partx", &["--add", &disk.dev])
                .map_err(|e| format!("no partition devices: {e}"))?;
        }
        if !Path::new(&disk.part(2)).exists() {
            return Err(format!("{} does not appear", disk.part(2)));
        }
        Ok(disk)
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    fn backing_range(&self, from: u64, len: u64) -> Vec<u8> {
        let b = std::fs::read(&self.backing).unwrap();
        b[from as usize..(from + len) as usize].to_vec()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = run("partx", &["--delete", &self.dev]);
        let _ = run("losetup", &["--detach", &self.dev]);
    }
}

macro_rules! disk_or_skip {
    () => {
        match Disk::new() {
            Ok(d) => d,
            Err(why) => {
                eprintln!("skipping loop-device test: {why}");
                return;
            }
        }
    };
}

fn opts() -> InstallOptions {
    InstallOptions {
        stall_timeout: Duration::from_secs(5),
        buffer_size: MIB as usize,
        ..InstallOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_into_a_partition_with_direct_io_and_reads_back() {
    let disk = disk_or_skip!();
    let a = checksum(&disk.backing_range(P1, PART));
    let img = image_bytes("v2", 6 * MIB as usize + 1234);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let spec = ImageSpec::new(&srv.url(), &checksum(&z), Some(img.len() as u64)).unwrap();
    let mut inst = Installer::new(spec, Path::new(&disk.part(2)), Create::No, opts()).unwrap();
    let report = inst.run().await.unwrap();
    assert!(report.direct_io, "block devices take O_DIRECT");
    assert_eq!(report.image_len, img.len() as u64);
    // Read the partition itself, then the backing file: both hold the image.
    let mut on_dev = std::fs::read(disk.part(2)).unwrap();
    assert_eq!(on_dev.len() as u64, PART);
    on_dev.truncate(img.len());
    assert_eq!(on_dev, img);
    assert_eq!(disk.backing_range(P2, img.len() as u64), img);
    assert_eq!(
        checksum(&disk.backing_range(P1, PART)),
        a,
        "slot A unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_stops_at_the_partition_end() {
    let disk = disk_or_skip!();
    let a = checksum(&disk.backing_range(P1, PART));
    let after = disk.backing_range(P2 + PART, DISK - P2 - PART);
    let bomb = zstd(&vec![0xAB; 32 * MIB as usize]);
    let srv = ImageServer::start(bomb.clone()).await;
    let spec = ImageSpec::new(&srv.url(), &checksum(&bomb), None).unwrap();
    let mut inst = Installer::new(spec, Path::new(&disk.part(2)), Create::No, opts()).unwrap();
    let e = inst.run().await.unwrap_err();
    assert_eq!(e.reason(), "ImageTooLarge");
    assert!(
        e.to_string().contains(&disk.part(2)) && e.to_string().contains(&PART.to_string()),
        "{e}"
    );
    assert_eq!(
        disk.backing_range(P2 + PART, DISK - P2 - PART),
        after,
        "nothing written past the partition"
    );
    assert_eq!(
        checksum(&disk.backing_range(P1, PART)),
        a,
        "slot A unchanged"
    );
}

/// The agent with the real host implementation stages into the partition that is not
/// the root= of the (fake) kernel command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_on_a_real_host_stages_into_the_inactive_partition() {
    let disk = disk_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let a = checksum(&disk.backing_range(P1, PART));
    std::fs::write(
        dir.path().join("cmdline"),
        format!("ro root={} quiet", disk.part(1)),
    )
    .unwrap();
    std::fs::write(dir.path().join("os-release"), "ID=test\nVERSION_ID=v1\n").unwrap();
    std::fs::write(dir.path().join("mountinfo"), "").unwrap();
    let host = RealHost::new(RealHostConfig {
        slot_a: Some(disk.part(1).parse().unwrap()),
        slot_b: Some(disk.part(2).parse().unwrap()),
        dev_dir: "/dev".into(),
        cmdline: dir.path().join("cmdline"),
        mountinfo: dir.path().join("mountinfo"),
        os_release: dir.path().join("os-release"),
        version_key: "VERSION_ID".into(),
        boot_id: "/proc/sys/kernel/random/boot_id".into(),
        reboot: "false".parse().unwrap(),
        boot: Box::new(GrubBoot::new(dir.path().join("grubenv"))),
    });
    let img = image_bytes("v2", 3 * MIB as usize);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let progress = dir.path().join("progress");
    std::fs::create_dir_all(&progress).unwrap();
    let p = osroll_api::OSUpgradeProgress::new(
        PROGRESS,
        spec("v2", &srv.url(), &checksum(&z), Some(img.len() as u64)),
    );
    FileSource::write_progress(&progress, &p).unwrap();
    let mut cfg = osroll_agent::AgentConfig::new(NODE, dir.path().join("state"));
    cfg.install = opts();
    cfg.resync = Duration::from_millis(100);
    let agent = tokio::spawn(osroll_agent::run_with_source(
        cfg,
        FileSource::new(&progress, NODE, Duration::from_millis(10)),
        Arc::new(host),
    ));
    let st = eventually(Duration::from_secs(20), "Staged", || {
        FileSource::read_status(&progress, PROGRESS)
            .filter(|s| matches!(s.phase, Some(ProgressPhase::Staged | ProgressPhase::Failed)))
    })
    .await;
    agent.abort();
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    assert_eq!(st.inactive_partition.as_deref(), Some("B"));
    assert_eq!(disk.backing_range(P2, img.len() as u64), img);
    assert_eq!(
        checksum(&disk.backing_range(P1, PART)),
        a,
        "the running partition is untouched"
    );
}

/// Zero runs become write-zeroes requests on the partition, and none of the older image
/// that slot B held survives where the new image has zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_runs_are_zeroed_on_the_partition_over_its_old_contents() {
    let disk = disk_or_skip!();
    let a = checksum(&disk.backing_range(P1, PART));
    {
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(disk.part(2))
            .unwrap();
        std::io::Write::write_all(&mut dev, &vec![0xEE; PART as usize]).unwrap();
        dev.sync_all().unwrap();
    }
    let mut img = image_bytes("v2", 6 * MIB as usize);
    img[MIB as usize..4 * MIB as usize].fill(0);
    let z = zstd(&img);
    let srv = ImageServer::start(z.clone()).await;
    let spec = ImageSpec::new(&srv.url(), &checksum(&z), Some(img.len() as u64)).unwrap();
    let mut inst = Installer::new(spec, Path::new(&disk.part(2)), Create::No, opts()).unwrap();
    let report = inst.run().await.unwrap();
    assert_eq!(report.zeroed, 3 * MIB, "three 1 MiB blocks of zeros");
    let on_dev = std::fs::read(disk.part(2)).unwrap();
    assert_eq!(&on_dev[..img.len()], &img[..]);
    assert!(
        on_dev[img.len()..].iter().all(|&b| b == 0xEE),
        "past the image: old bytes"
    );
    assert_eq!(disk.backing_range(P2, img.len() as u64), img);
    assert_eq!(
        checksum(&disk.backing_range(P1, PART)),
        a,
        "slot A unchanged"
    );
}

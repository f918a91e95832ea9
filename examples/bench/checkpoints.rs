//! Checkpoint figures (`--only checkpoints` runs just these): create and restore time for a
//! sprite holding 1 GiB in 10 000 files, and the disk 20 checkpoints of that unchanged tree
//! use. Baseline, measured in the same run on the same sprite: a plain copy of the tree
//! (`cp -a --reflink=never`), which is what a checkpoint without shared extents costs.

use sprites::{CheckpointListOptions, Sprite};
use std::time::Instant;

/// The tree: 10 000 files of 107 374 bytes (1 GiB in all), in 100 directories.
const FILES: u64 = 10_000;
const TREE_BYTES: u64 = 1 << 30;
/// Checkpoints of the unchanged tree whose disk use is measured.
const CHECKPOINTS: usize = 20;
/// Restores timed.
const RESTORES: usize = 3;

/// What [`measure`] found.
pub struct Figures {
    pub create_p50_ms: f64,
    pub create_max_ms: f64,
    pub restore_p50_ms: f64,
    /// Disk used by the tree and its 20 checkpoints, MiB.
    pub disk_20x_mib: f64,
    /// Disk used by the tree alone, MiB (same measure).
    pub tree_disk_mib: f64,
    pub copy_baseline_ms: f64,
    /// How the disk was measured.
    pub disk_how: &'static str,
}

fn sh(sprite: &Sprite, script: &str) -> Result<String, Box<dyn std::error::Error>> {
    let out = sprite.command("sh").args(["-c", script]).output()?;
    if !out.status.success() {
        return Err(format!("{script}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Disk used by the sprite, bytes: its filesystem's used blocks (a sandboxed sprite's own
/// btrfs image, through the overlay), or on the host runtime, which shares the host's disk,
/// what its directory holds (`du`, each hard-linked file once).
fn disk_used(sprite: &Sprite, runtime: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let script = if runtime == "host" {
        "sync; du -sB1 \"$HOME/..\" | cut -f1"
    } else {
        "sync; df -B1 --output=used / | tail -1"
    };
    Ok(sh(sprite, script)?.trim().parse()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Fills the sprite with the tree, then measures. Leaves checkpoints behind (the caller
/// deletes the sprite).
pub fn measure(sprite: &Sprite, runtime: &str) -> Result<Figures, Box<dyn std::error::Error>> {
    let fill = format!(
        "import os\nsize = {TREE_BYTES} // {FILES}\nfor i in range({FILES}):\n    d = 'tree/d%02d' % (i % 100)\n    os.makedirs(d, exist_ok=True)\n    with open('%s/f%05d' % (d, i), 'wb') as f:\n        f.write(os.urandom(size))\n"
    );
    let out = sprite.command("python3").args(["-c", &fill]).output()?;
    if !out.status.success() {
        return Err(format!("filling the tree: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    sh(sprite, "sync")?;
    let started = Instant::now();
    sh(sprite, "cp -a --reflink=never tree tree.copy && sync")?;
    let copy_baseline_ms = started.elapsed().as_secs_f64() * 1e3;
    sh(sprite, "rm -rf tree.copy && sync")?;
    let tree_used = disk_used(sprite, runtime)?;

    let mut creates = Vec::new();
    for _ in 0..CHECKPOINTS {
        let started = Instant::now();
        sprite.create_checkpoint()?.wait()?;
        creates.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let used = disk_used(sprite, runtime)?;
    let listed = sprite.list_checkpoints(&CheckpointListOptions::new())?;
    let first = listed
        .iter()
        .rfind(|c| !c.is_current())
        .ok_or("no checkpoint listed")?
        .id
        .clone();
    let mut restores = Vec::new();
    for _ in 0..RESTORES {
        let started = Instant::now();
        sprite.restore_checkpoint(&first)?.wait()?;
        restores.push(started.elapsed().as_secs_f64() * 1e3);
    }
    // The restored tree is the tree.
    let files: u64 = sh(sprite, "find tree -type f | wc -l")?.trim().parse()?;
    if files != FILES {
        return Err(format!("after a restore the tree has {files} files, not {FILES}").into());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(Figures {
        create_max_ms: creates.iter().cloned().fold(0.0, f64::max),
        create_p50_ms: median(creates),
        restore_p50_ms: median(restores),
        disk_20x_mib: mib(used),
        tree_disk_mib: mib(tree_used),
        copy_baseline_ms,
        disk_how: if runtime == "host" {
            "du of the sprite's directory"
        } else {
            "used blocks of the sprite's disk"
        },
    })
}

/// The table rows.
pub fn print(f: &Figures) {
    use super::row;
    row(
        "baseline: cp -a of the 1 GiB tree",
        format!("{:.0} ms", f.copy_baseline_ms),
        "",
    );
    row(
        "checkpoint create (1 GiB, 10k files) p50",
        format!("{:.1} ms", f.create_p50_ms),
        format!("{:.1}%", 100.0 * f.create_p50_ms / f.copy_baseline_ms),
    );
    row(
        "checkpoint create, slowest of 20",
        format!("{:.1} ms", f.create_max_ms),
        "",
    );
    row(
        "checkpoint restore p50",
        format!("{:.1} ms", f.restore_p50_ms),
        format!("{:.1}%", 100.0 * f.restore_p50_ms / f.copy_baseline_ms),
    );
    row(
        "disk: tree alone",
        format!("{:.0} MiB", f.tree_disk_mib),
        "",
    );
    row(
        "disk: tree + 20 checkpoints",
        format!("{:.0} MiB", f.disk_20x_mib),
        format!("{:.2}x tree", f.disk_20x_mib / 1024.0),
    );
    eprintln!("bench: checkpoint disk measured as {}", f.disk_how);
}

/// The JSON keys.
pub fn json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "checkpoint_create_ms": f.create_p50_ms,
        "checkpoint_create_max_ms": f.create_max_ms,
        "checkpoint_restore_ms": f.restore_p50_ms,
        "checkpoint_20x_disk_mib": f.disk_20x_mib,
        "checkpoint_20x_disk_vs_tree": f.disk_20x_mib / 1024.0,
        "checkpoint_tree_disk_mib": f.tree_disk_mib,
        "checkpoint_baseline_copy_ms": f.copy_baseline_ms,
        "checkpoint_create_vs_copy": f.create_p50_ms / f.copy_baseline_ms,
    })
}

/// `--only checkpoints`: these figures alone, on a sprite of their own.
pub fn only(
    client: &sprites::Client,
    runtime: &str,
    json_out: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let sprite = client.create_sprite(&format!("bench-cp-{}", std::process::id()))?;
    let result = measure(&sprite, runtime);
    let _ = sprite.delete();
    let f = result?;
    println!("runtime: {runtime}");
    super::row("measure", "value", "vs baseline");
    print(&f);
    if json_out {
        let mut v = json(&f);
        v["runtime"] = runtime.into();
        println!("{v}");
    }
    Ok(())
}

//! A progress bar for checkpoint streams, shared by the checkpoint examples.

use sprites::CheckpointStream;

/// Follows a create or restore stream on a progress bar; returns the checkpoint's id.
pub fn follow(
    what: &str,
    mut stream: CheckpointStream,
) -> Result<String, Box<dyn std::error::Error>> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos:>3}% {msg}",
    )?);
    bar.set_prefix(what.to_owned());
    for event in stream.by_ref() {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                bar.abandon_with_message("failed");
                return Err(e.into());
            }
        };
        if let Some(p) = event.progress {
            bar.set_position((p * 100.0).round() as u64);
        }
        bar.set_message(event.data.trim().to_owned());
    }
    bar.finish();
    Ok(stream
        .checkpoint_id()
        .ok_or("the stream named no checkpoint")?
        .to_owned())
}

//! What a lock file says about its holder: for people, and for the error a second writer
//! gets. The operating system's lock decides; this text only names.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The writer holding a store's lock.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Holder {
    host: String,
    pid: u32,
    /// The program's path as started.
    program: String,
    /// When the lock was taken, in seconds since 1970 (UTC).
    since: u64,
    /// The same, for people.
    since_utc: String,
    /// The store, as the holder named it.
    store: String,
}

impl Holder {
    /// This process, writing `store`.
    pub(crate) fn me(store: &Path) -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Holder {
            host: host_name(),
            pid: std::process::id(),
            program: std::env::args().next().unwrap_or_default(),
            since,
            since_utc: utc(since),
            store: store.display().to_string(),
        }
    }

    /// Replaces the file's content with this holder, as JSON.
    pub(crate) fn write(&self, mut file: &File) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(&json)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let program = Path::new(&self.program)
            .file_name()
            .map_or(String::new(), |n| format!(" ({})", n.to_string_lossy()));
        write!(
            f,
            "process {}{program} on {} since {}",
            self.pid, self.host, self.since_utc
        )
    }
}

/// Who the lock file names, for people: `None` while it names nobody (a holder that has
/// just taken the lock writes its name an instant later).
pub(crate) fn describe(mut file: &File) -> std::io::Result<Option<String>> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(match serde_json::from_str::<Holder>(&text) {
        Ok(holder) => holder.to_string(),
        // Not ours: show its first line.
        Err(_) => format!("{:?}", text.lines().next().unwrap_or_default()),
    }))
}

/// This machine's name.
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is writable for its whole length, which is passed with it.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "an unknown host".into())
}

/// `seconds` since 1970 as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian calendar).
pub(crate) fn utc(seconds: u64) -> String {
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm, in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

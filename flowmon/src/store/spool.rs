//! The spool: a bounded on-disk FIFO of [`Write`]s, for while Redis cannot take them.
//!
//! Items are JSON lines in segment files `<dir>/<seq>.jsonl` (`seq` zero-padded to 20 digits),
//! each appended with a single `write(2)`, so a crash of the process loses nothing that was
//! pushed; a segment is fsynced when the next one starts and at [`Spool::sync`].
//!
//! `<dir>/cursor` holds `<seq> <offset>`: where the oldest item not yet replayed starts. It is
//! replaced (write, rename) after each replayed batch, before the segments it has passed are
//! deleted. A crash between a batch reaching Redis and the cursor moving replays that batch on
//! the next start, which the writes' idempotence makes harmless. An empty spool leaves no files.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read as _, Seek, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use super::ops::Write;

const CURSOR: &str = "cursor";
const SEGMENT_SUFFIX: &str = ".jsonl";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    len: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; items are appended to the last one.
    segments: VecDeque<Segment>,
    /// Where the oldest item not yet replayed starts.
    head: Position,
    /// The last segment, open for appending; `Some` exactly when there are segments.
    tail: Option<File>,
    items: u64,
}

/// Items read from the head of the spool; they stay there until [`Spool::commit`].
#[derive(Debug)]
pub struct Batch {
    pub writes: Vec<Write>,
    /// Lines that were not a readable write (a damaged file), skipped with an error log.
    pub unreadable: u64,
    start: Position,
    end: Position,
    lines: u64,
}

#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// Refused: it would take the spool beyond its size limit.
    Full,
}

impl Spool {
    /// Opens (creating it if need be) the spool in `dir`, holding at most `max_bytes` on disk,
    /// and finds the backlog a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let seq = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|seq| seq.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        let cursor = read_cursor(dir);
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            // Small enough that replayed items free space soon, large enough to fsync rarely.
            segment_bytes: (max_bytes / 16).clamp(4 << 10, 64 << 20),
            segments: VecDeque::new(),
            head: Position {
                segment: 0,
                offset: 0,
            },
            tail: None,
            items: 0,
        };
        for seq in seqs {
            let path = segment_path(&spool.dir, seq);
            if cursor.is_some_and(|cursor| seq < cursor.segment) {
                // Replayed, but the previous run ended before deleting it.
                fs::remove_file(path)?;
            } else {
                let len = fs::metadata(path)?.len();
                spool.segments.push_back(Segment { seq, len });
            }
        }
        if let Some(first) = spool.segments.front() {
            spool.head = match cursor {
                Some(cursor) if cursor.segment == first.seq => Position {
                    segment: first.seq,
                    offset: cursor.offset.min(first.len),
                },
                // No usable cursor: replay everything, which is safe, rather than skip.
                _ => Position {
                    segment: first.seq,
                    offset: 0,
                },
            };
        }
        spool.scan()?;
        if spool.items == 0 {
            spool.clear()?;
        } else if let Some(last) = spool.segments.back() {
            let path = segment_path(&spool.dir, last.seq);
            spool.tail = Some(OpenOptions::new().append(true).open(path)?);
        }
        Ok(spool)
    }

    /// Items not yet replayed.
    pub fn len(&self) -> u64 {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Bytes of the items not yet replayed.
    pub fn bytes(&self) -> u64 {
        self.disk_bytes() - self.head.offset
    }

    /// Bytes on disk, which include the replayed start of the oldest segment.
    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.len).sum()
    }

    /// Appends `write`, unless that would take the spool beyond its limit.
    pub fn push(&mut self, write: &Write) -> io::Result<Pushed> {
        let mut line = serde_json::to_vec(write)?;
        line.push(b'\n');
        let added = line.len() as u64;
        if self.disk_bytes() + added > self.max_bytes {
            return Ok(Pushed::Full);
        }
        let (tail, segment) = self.tail()?;
        if let Err(err) = tail.write_all(&line) {
            // Cut a partial line off, so that the next item starts where the length says.
            let _ = tail.set_len(segment.len);
            return Err(err);
        }
        segment.len += added;
        self.items += 1;
        Ok(Pushed::Stored)
    }

    /// The file and segment to append to, starting a new segment when the last one is full.
    fn tail(&mut self) -> io::Result<(&mut File, &mut Segment)> {
        let full = self
            .segments
            .back()
            .is_none_or(|last| last.len >= self.segment_bytes);
        if full {
            if let Some(finished) = self.tail.take() {
                finished.sync_data()?;
            }
            let seq = self
                .segments
                .back()
                .map_or(self.head.segment, |last| last.seq + 1);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            File::open(&self.dir)?.sync_all()?;
            self.tail = Some(file);
            self.segments.push_back(Segment { seq, len: 0 });
        }
        match (self.tail.as_mut(), self.segments.back_mut()) {
            (Some(file), Some(segment)) => Ok((file, segment)),
            _ => unreachable!("the spool has a tail file exactly when it has segments"),
        }
    }

    /// Up to `max` items from the head, left in place.
    pub fn peek(&self, max: usize) -> io::Result<Batch> {
        let mut batch = Batch {
            writes: Vec::new(),
            unreadable: 0,
            start: self.head,
            end: self.head,
            lines: 0,
        };
        let mut line = Vec::new();
        for segment in &self.segments {
            if batch.lines >= max as u64 {
                break;
            }
            if segment.seq != batch.end.segment {
                batch.end = Position {
                    segment: segment.seq,
                    offset: 0,
                };
            }
            let mut file = File::open(segment_path(&self.dir, segment.seq))?;
            file.seek(SeekFrom::Start(batch.end.offset))?;
            let mut reader = BufReader::new(file.take(segment.len - batch.end.offset));
            while batch.lines < max as u64 {
                line.clear();
                let read = reader.read_until(b'\n', &mut line)?;
                if read == 0 {
                    break;
                }
                batch.end.offset += read as u64;
                batch.lines += 1;
                match serde_json::from_slice(&line) {
                    Ok(write) => batch.writes.push(write),
                    Err(err) => {
                        tracing::error!(
                            segment = %segment_path(&self.dir, segment.seq).display(),
                            offset = batch.end.offset - read as u64,
                            %err,
                            "unreadable item in the Redis spool: skipped"
                        );
                        batch.unreadable += 1;
                    }
                }
            }
        }
        Ok(batch)
    }

    /// Removes `batch`, the last [`Spool::peek`], from the head.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        debug_assert_eq!(batch.start, self.head, "commit of a batch not at the head");
        self.items -= batch.lines;
        self.head = batch.end;
        if self.items == 0 {
            return self.clear();
        }
        let mut replayed = Vec::new();
        while let [first, second, ..] = self.segments.make_contiguous() {
            if first.seq == self.head.segment && self.head.offset < first.len {
                break;
            }
            if first.seq == self.head.segment {
                self.head = Position {
                    segment: second.seq,
                    offset: 0,
                };
            }
            replayed.push(first.seq);
            self.segments.pop_front();
        }
        self.write_cursor()?;
        for seq in replayed {
            fs::remove_file(segment_path(&self.dir, seq))?;
        }
        Ok(())
    }

    /// Flushes the newest segment to the disk.
    pub fn sync(&self) -> io::Result<()> {
        match &self.tail {
            Some(tail) => tail.sync_data(),
            None => Ok(()),
        }
    }

    /// Counts the items after the head, cutting off a line a crash left half-written.
    fn scan(&mut self) -> io::Result<()> {
        self.items = 0;
        for segment in &mut self.segments {
            let path = segment_path(&self.dir, segment.seq);
            let start = if segment.seq == self.head.segment {
                self.head.offset
            } else {
                0
            };
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(start))?;
            let mut reader = BufReader::new(file);
            let (mut position, mut complete) = (start, start);
            loop {
                let buf = reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                self.items += buf.iter().filter(|&&byte| byte == b'\n').count() as u64;
                if let Some(last) = buf.iter().rposition(|&byte| byte == b'\n') {
                    complete = position + last as u64 + 1;
                }
                let read = buf.len();
                position += read as u64;
                reader.consume(read);
            }
            if complete < position {
                tracing::warn!(
                    segment = %path.display(),
                    bytes = position - complete,
                    "cutting off a write to the Redis spool that a crash interrupted"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(complete)?;
            }
            segment.len = complete;
        }
        Ok(())
    }

    /// Deletes every file: everything was replayed.
    fn clear(&mut self) -> io::Result<()> {
        self.tail = None;
        for segment in self.segments.drain(..) {
            fs::remove_file(segment_path(&self.dir, segment.seq))?;
        }
        match fs::remove_file(self.dir.join(CURSOR)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        self.head = Position {
            segment: 0,
            offset: 0,
        };
        Ok(())
    }

    fn write_cursor(&self) -> io::Result<()> {
        let temporary = self.dir.join(format!("{CURSOR}.tmp"));
        fs::write(
            &temporary,
            format!("{} {}\n", self.head.segment, self.head.offset),
        )?;
        fs::rename(temporary, self.dir.join(CURSOR))
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// The cursor a previous run left; `None` when there is none or it is damaged (which replays
/// from the oldest segment).
fn read_cursor(dir: &Path) -> Option<Position> {
    let path = dir.join(CURSOR);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the spool cursor: replaying the whole spool");
            return None;
        }
    };
    let parsed = text.trim().split_once(' ').and_then(|(segment, offset)| {
        Some(Position {
            segment: segment.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    });
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "damaged spool cursor: replaying the whole spool");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ops::Op;

    /// 64 KiB spools have 4 KiB segments: a few dozen items each.
    const MAX: u64 = 64 << 10;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("flowmon-spool-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Self(path)
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }

        fn append(&self, name: &str, bytes: &[u8]) {
            let mut file = OpenOptions::new()
                .append(true)
                .open(self.0.join(name))
                .unwrap();
            file.write_all(bytes).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(n: u32) -> Write {
        Write {
            id: format!("w{n:04}"),
            ops: vec![Op::Expire {
                key: format!("k{n:04}"),
                secs: 60,
            }],
        }
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|n| write(n).id).collect()
    }

    fn push_all(spool: &mut Spool, range: std::ops::Range<u32>) {
        for n in range {
            assert_eq!(spool.push(&write(n)).unwrap(), Pushed::Stored);
        }
    }

    /// Peeks and commits batches of `max` until the spool is empty.
    fn drain(spool: &mut Spool, max: usize) -> Vec<String> {
        let mut drained = Vec::new();
        while !spool.is_empty() {
            let batch = spool.peek(max).unwrap();
            drained.extend(batch.writes.iter().map(|write| write.id.clone()));
            spool.commit(&batch).unwrap();
        }
        drained
    }

    #[test]
    fn items_come_out_in_order_across_segments_and_replayed_segments_go() {
        let dir = TempDir::new("fifo");
        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        push_all(&mut spool, 0..200);
        let line = serde_json::to_vec(&write(0)).unwrap().len() as u64 + 1;
        assert_eq!((spool.len(), spool.bytes()), (200, 200 * line));
        let segments = dir.files().len();
        let per_segment = 4096u64.div_ceil(line);
        assert_eq!(segments as u64, 200u64.div_ceil(per_segment));

        let first = spool.peek(150).unwrap();
        assert_eq!(
            spool.peek(150).unwrap().writes,
            first.writes,
            "peek consumes nothing"
        );
        spool.commit(&first).unwrap();
        assert_eq!((spool.len(), spool.bytes()), (50, 50 * line));
        let files = dir.files();
        assert!(files.contains(&CURSOR.to_owned()), "{files:?}");
        assert!(
            files.len() < segments,
            "replayed segments are deleted: {files:?}"
        );

        let mut drained: Vec<String> = first.writes.iter().map(|w| w.id.clone()).collect();
        drained.extend(drain(&mut spool, 7));
        assert_eq!(drained, ids(0..200));
        assert_eq!(
            dir.files(),
            Vec::<String>::new(),
            "an empty spool leaves no files"
        );
        push_all(&mut spool, 200..201);
        assert_eq!(drain(&mut spool, 10), ids(200..201));
    }

    #[test]
    fn a_reopened_spool_resumes_at_its_cursor_and_cuts_a_torn_write() {
        let dir = TempDir::new("reopen");
        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        push_all(&mut spool, 0..100);
        let batch = spool.peek(30).unwrap();
        spool.commit(&batch).unwrap();
        drop(spool);
        let last = dir
            .files()
            .into_iter()
            .rfind(|name| name.ends_with(SEGMENT_SUFFIX));
        dir.append(&last.unwrap(), br#"{"id":"w0100","op"#);

        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        assert_eq!(spool.len(), 70);
        push_all(&mut spool, 100..101);
        assert_eq!(drain(&mut spool, 40), ids(30..101));
    }

    #[test]
    fn a_full_spool_refuses_items_until_replays_free_space() {
        let dir = TempDir::new("full");
        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        let mut stored = 0;
        while spool.push(&write(stored)).unwrap() == Pushed::Stored {
            stored += 1;
        }
        let line = serde_json::to_vec(&write(0)).unwrap().len() as u64 + 1;
        assert_eq!(u64::from(stored), MAX / line);
        assert_eq!(spool.push(&write(stored)).unwrap(), Pushed::Full);
        assert_eq!(spool.len(), u64::from(stored));

        let batch = spool.peek(stored as usize).unwrap();
        spool.commit(&batch).unwrap();
        assert_eq!(spool.push(&write(stored)).unwrap(), Pushed::Stored);
    }

    #[test]
    fn unreadable_lines_are_skipped_and_reported() {
        let dir = TempDir::new("damaged");
        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        push_all(&mut spool, 0..2);
        drop(spool);
        dir.append(&format!("{:020}{SEGMENT_SUFFIX}", 0), b"not json\n");
        let mut spool = Spool::open(&dir.0, MAX).unwrap();
        push_all(&mut spool, 2..3);
        assert_eq!(spool.len(), 4);
        let batch = spool.peek(10).unwrap();
        assert_eq!(batch.unreadable, 1);
        assert_eq!(
            batch
                .writes
                .iter()
                .map(|w| w.id.clone())
                .collect::<Vec<_>>(),
            ids(0..3)
        );
    }
}

//! skywarden's archive format for recorded raw frames: append-only, compact, fast to replay.
//!
//! ```text
//! file   := header chunk*
//! header := "SKYWARC" 0x00 | version u8 (=1) | format u8 (1 = firehose CBOR, 2 = Jetstream JSON) | 6 zero bytes
//! chunk  := compressed_len u32le | raw_len u32le | frame_count u32le | base_micros u64le | zstd(payload)
//! payload:= ( varint(frame_len) varint(received_micros - base_micros) frame_bytes )*
//! ```
//!
//! Frames are stored exactly as received, so a replay decodes the same bytes a live run did.
//! Chunks are independent zstd frames with a content checksum: a crash mid-write leaves at most
//! one torn chunk at the tail, which readers report and [`ArchiveWriter::append`] cuts off.
//! The reader also accepts the plain `[u32le length][frame]` recordings that other tools write.

use crate::{Format, RawFrame};
use bytes::Bytes;
use skywarden_atproto::car::{read_varint, write_varint};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// First bytes of every archive.
pub const MAGIC: &[u8; 8] = b"SKYWARC\0";
const HEADER_LEN: usize = 16;
const CHUNK_HEADER_LEN: usize = 20;
/// A chunk is flushed once its uncompressed frames reach this size.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// No chunk may claim more than this (protects readers from corrupt lengths).
const MAX_CHUNK_BYTES: usize = 256 << 20;

/// Why an archive could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The archive file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid archive.
    #[error("{path}: corrupt archive at byte {offset}: {message}")]
    Corrupt {
        /// The archive file.
        path: String,
        /// Byte offset of the bad chunk.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// Appending frames of another format than the archive holds.
    #[error("{path}: archive holds {existing:?} frames, cannot append {new:?}")]
    FormatMismatch {
        /// The archive file.
        path: String,
        /// Its format.
        existing: Format,
        /// The format offered.
        new: Format,
    },
}

fn format_code(format: Format) -> u8 {
    match format {
        Format::Firehose => 1,
        Format::Jetstream => 2,
    }
}

/// Writes frames to an archive, chunk by chunk.
pub struct ArchiveWriter {
    file: BufWriter<File>,
    path: String,
    format: Format,
    chunk: Vec<u8>,
    chunk_frames: u32,
    chunk_base: i64,
    chunk_limit: usize,
    level: i32,
    frames_written: u64,
}

impl ArchiveWriter {
    /// Creates (or truncates) an archive.
    pub fn create(path: &Path, format: Format) -> Result<Self, ArchiveError> {
        let p = path.display().to_string();
        let io = |source| ArchiveError::Io {
            path: p.clone(),
            source,
        };
        let mut file = File::create(path).map_err(io)?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = 1;
        header[9] = format_code(format);
        file.write_all(&header).map_err(io)?;
        Ok(Self::with_file(file, p, format))
    }

    /// Opens an archive to append to it (creating it if missing). A torn chunk left by a crash
    /// is cut off first; everything before it is kept.
    pub fn append(path: &Path, format: Format) -> Result<Self, ArchiveError> {
        if !path.exists() {
            return Self::create(path, format);
        }
        let p = path.display().to_string();
        let mut reader = ArchiveReader::open(path)?;
        if reader.format() != format {
            return Err(ArchiveError::FormatMismatch {
                path: p,
                existing: reader.format(),
                new: format,
            });
        }
        if reader.raw {
            return Err(ArchiveError::Corrupt {
                path: p,
                offset: 0,
                message:
                    "a plain length-prefixed recording cannot be appended to; record to a new file"
                        .into(),
            });
        }
        let good_end = reader.last_good_chunk_end();
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| ArchiveError::Io {
                path: p.clone(),
                source,
            })?;
        file.set_len(good_end).map_err(|source| ArchiveError::Io {
            path: p.clone(),
            source,
        })?;
        let mut file = file;
        file.seek(SeekFrom::End(0))
            .map_err(|source| ArchiveError::Io {
                path: p.clone(),
                source,
            })?;
        Ok(Self::with_file(file, p, format))
    }

    fn with_file(file: File, path: String, format: Format) -> Self {
        ArchiveWriter {
            file: BufWriter::new(file),
            path,
            format,
            chunk: Vec::with_capacity(DEFAULT_CHUNK_BYTES + 64 * 1024),
            chunk_frames: 0,
            chunk_base: 0,
            chunk_limit: DEFAULT_CHUNK_BYTES,
            level: 3,
            frames_written: 0,
        }
    }

    /// Sets the zstd level (1 fast … 19 small). Default 3.
    pub fn level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Sets the uncompressed size at which a chunk is flushed.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_limit = bytes.clamp(1, MAX_CHUNK_BYTES / 2);
        self
    }

    /// The archive's frame format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Frames written so far (including those still buffered).
    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Adds one frame; flushes a chunk when it is full.
    pub fn write(&mut self, frame: &RawFrame) -> Result<(), ArchiveError> {
        if self.chunk_frames == 0 {
            self.chunk_base = frame.received_micros;
        }
        write_varint(&mut self.chunk, frame.bytes.len() as u64);
        let delta = frame.received_micros.saturating_sub(self.chunk_base).max(0);
        write_varint(&mut self.chunk, delta as u64);
        self.chunk.extend_from_slice(&frame.bytes);
        self.chunk_frames += 1;
        self.frames_written += 1;
        if self.chunk.len() >= self.chunk_limit {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered frames as a chunk and flushes the file; after this they survive a
    /// crash of the process.
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        let io = |source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        };
        if self.chunk_frames > 0 {
            let mut encoder = zstd::bulk::Compressor::new(self.level).map_err(io)?;
            encoder.include_checksum(true).map_err(io)?;
            let compressed = encoder.compress(&self.chunk).map_err(io)?;
            let mut header = [0u8; CHUNK_HEADER_LEN];
            header[0..4].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
            header[4..8].copy_from_slice(&(self.chunk.len() as u32).to_le_bytes());
            header[8..12].copy_from_slice(&self.chunk_frames.to_le_bytes());
            header[12..20].copy_from_slice(&self.chunk_base.to_le_bytes());
            self.file.write_all(&header).map_err(io)?;
            self.file.write_all(&compressed).map_err(io)?;
            self.chunk.clear();
            self.chunk_frames = 0;
        }
        self.file.flush().map_err(io)
    }

    /// Flushes and syncs the file to disk.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|source| ArchiveError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads frames back from an archive (or a plain length-prefixed recording).
pub struct ArchiveReader {
    file: BufReader<File>,
    path: String,
    format: Format,
    raw: bool,
    offset: u64,
    /// The decompressed chunk. Frames are slices of it, not copies; its buffer is reused for
    /// the next chunk when no frame of this one is still held.
    chunk: Bytes,
    chunk_pos: usize,
    chunk_base: i64,
    compressed: Vec<u8>,
    /// Kept across chunks with `chunk`'s buffer: a fresh context and buffer per chunk cost
    /// more than the decompression itself (page faults on every new allocation).
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl ArchiveReader {
    /// Opens an archive, detecting its format from the header.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let p = path.display().to_string();
        let io = |source| ArchiveError::Io {
            path: p.clone(),
            source,
        };
        // A small buffer: chunk bodies (far larger) are then read straight into the reader's
        // own buffer instead of being copied out of this one; chunk headers and the frames of
        // plain recordings are small reads it serves.
        let mut file = BufReader::with_capacity(16 * 1024, File::open(path).map_err(io)?);
        let mut header = [0u8; HEADER_LEN];
        let n = read_up_to(&mut file, &mut header).map_err(io)?;
        let (format, raw, offset) = if n == HEADER_LEN && &header[..8] == MAGIC {
            if header[8] != 1 {
                return Err(ArchiveError::Corrupt {
                    path: p,
                    offset: 8,
                    message: format!("unsupported archive version {}", header[8]),
                });
            }
            let format = match header[9] {
                1 => Format::Firehose,
                2 => Format::Jetstream,
                other => {
                    return Err(ArchiveError::Corrupt {
                        path: p,
                        offset: 9,
                        message: format!("unknown frame format {other}"),
                    });
                }
            };
            (format, false, HEADER_LEN as u64)
        } else {
            // A plain `[u32le len][frame]` recording of firehose frames.
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            (Format::Firehose, true, 0)
        };
        Ok(ArchiveReader {
            file,
            path: p,
            format,
            raw,
            offset,
            chunk: Bytes::new(),
            chunk_pos: 0,
            chunk_base: 0,
            compressed: Vec::new(),
            decompressor: None,
        })
    }

    /// The frame format of this archive.
    pub fn format(&self) -> Format {
        self.format
    }

    fn corrupt(&self, offset: u64, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Corrupt {
            path: self.path.clone(),
            offset,
            message: message.into(),
        }
    }

    /// The next frame, `None` at the end. A torn tail chunk is an error naming its offset.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, ArchiveError> {
        if self.raw {
            return self.next_plain_frame();
        }
        while self.chunk_pos >= self.chunk.len() {
            if !self.load_chunk()? {
                return Ok(None);
            }
        }
        let rest = &self.chunk[self.chunk_pos..];
        let bad = |r: &Self| r.corrupt(r.offset, "frame entry overruns its chunk");
        let (len, a) = read_varint(rest).ok_or_else(|| bad(self))?;
        let (delta, b) = read_varint(&rest[a..]).ok_or_else(|| bad(self))?;
        let start = a + b;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| bad(self))?;
        let at = self.chunk_pos;
        let frame = RawFrame {
            bytes: self.chunk.slice(at + start..at + end),
            received_micros: self.chunk_base.saturating_add(delta as i64),
        };
        self.chunk_pos += end;
        Ok(Some(frame))
    }

    fn load_chunk(&mut self) -> Result<bool, ArchiveError> {
        let mut header = [0u8; CHUNK_HEADER_LEN];
        let n = read_up_to(&mut self.file, &mut header).map_err(|source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        })?;
        if n == 0 {
            return Ok(false);
        }
        if n < CHUNK_HEADER_LEN {
            return Err(self.corrupt(self.offset, "torn chunk header at end of file"));
        }
        let compressed_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let raw_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        if compressed_len > MAX_CHUNK_BYTES || raw_len > MAX_CHUNK_BYTES {
            return Err(self.corrupt(self.offset, "chunk length out of range"));
        }
        self.chunk_base = i64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        self.compressed.resize(compressed_len, 0);
        let n = read_up_to(&mut self.file, &mut self.compressed).map_err(|source| {
            ArchiveError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        if n < compressed_len {
            return Err(self.corrupt(self.offset, "torn chunk at end of file"));
        }
        // The previous chunk's buffer, unless a frame of it is still held (then a new one).
        let mut buffer = match std::mem::take(&mut self.chunk).try_into_mut() {
            Ok(mut unique) => {
                // Emptied first: turning it into a `Vec` then moves no bytes.
                unique.clear();
                Vec::from(unique)
            }
            Err(_) => Vec::new(),
        };
        buffer.reserve(raw_len);
        let decoder = match &mut self.decompressor {
            Some(d) => d,
            empty => empty.insert(zstd::bulk::Decompressor::new().map_err(|source| {
                ArchiveError::Io {
                    path: self.path.clone(),
                    source,
                }
            })?),
        };
        let n = decoder
            .decompress_to_buffer(&self.compressed, &mut buffer)
            .map_err(|e| self.corrupt(self.offset, format!("chunk does not decompress: {e}")))?;
        self.chunk = Bytes::from(buffer);
        if n != raw_len {
            return Err(self.corrupt(self.offset, "chunk size differs from its header"));
        }
        self.chunk_pos = 0;
        self.offset += (CHUNK_HEADER_LEN + compressed_len) as u64;
        Ok(true)
    }

    fn next_plain_frame(&mut self) -> Result<Option<RawFrame>, ArchiveError> {
        let io = |source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        };
        let mut len = [0u8; 4];
        let n = read_up_to(&mut self.file, &mut len).map_err(io)?;
        if n == 0 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(len) as usize;
        if n < 4 || len > MAX_CHUNK_BYTES {
            return Err(self.corrupt(self.offset, "bad frame length"));
        }
        let mut bytes = vec![0u8; len];
        let n = read_up_to(&mut self.file, &mut bytes).map_err(|source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        })?;
        if n < len {
            return Err(self.corrupt(self.offset, "torn frame at end of file"));
        }
        self.offset += 4 + len as u64;
        Ok(Some(RawFrame {
            bytes: bytes.into(),
            received_micros: 0,
        }))
    }

    /// Reads to the end and returns the offset just past the last intact chunk.
    fn last_good_chunk_end(&mut self) -> u64 {
        loop {
            let before = self.offset;
            match self.load_chunk() {
                Ok(true) => continue,
                Ok(false) | Err(_) => return before,
            }
        }
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<RawFrame> {
        (0..n)
            .map(|i| RawFrame {
                bytes: format!("frame number {i} {}", "x".repeat(i % 97))
                    .into_bytes()
                    .into(),
                received_micros: 1_700_000_000_000_000 + i as i64 * 1000,
            })
            .collect()
    }

    fn read_all(path: &Path) -> Result<Vec<RawFrame>, ArchiveError> {
        let mut r = ArchiveReader::open(path)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    /// Writes `frames` to a new archive at `path` with chunks of `chunk_bytes`.
    fn write_archive(path: &Path, frames: &[RawFrame], chunk_bytes: usize) {
        let mut w = ArchiveWriter::create(path, Format::Firehose)
            .unwrap()
            .chunk_bytes(chunk_bytes);
        for f in frames {
            w.write(f).unwrap();
        }
        w.finish().unwrap();
    }

    /// Frames are slices of the chunk buffer: one dropped before the next chunk loads lets
    /// the buffer be reused, one still held keeps its bytes (the next chunk gets a new one).
    #[test]
    fn frames_outlive_their_chunk_and_buffers_are_reused() {
        let dir = std::env::temp_dir().join(format!("skw-archive-reuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.skwa");
        let all = frames(2000);
        write_archive(&path, &all, 4 * 1024);
        let mut r = ArchiveReader::open(&path).unwrap();
        let mut held = Vec::new();
        for (i, expected) in all.iter().enumerate() {
            let f = r.next_frame().unwrap().expect("a frame");
            assert_eq!(&f, expected, "frame {i}");
            // Every 97th frame is kept across later chunks; the rest are dropped at once.
            if i % 97 == 0 {
                held.push((i, f));
            }
        }
        assert!(r.next_frame().unwrap().is_none());
        for (i, f) in &held {
            assert_eq!(f, &all[*i], "held frame {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trip_append_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("skw-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.skwa");
        let all = frames(5000);
        write_archive(&path, &all[..3000], 16 * 1024);
        let mut w = ArchiveWriter::append(&path, Format::Firehose).unwrap();
        for f in &all[3000..] {
            w.write(f).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(read_all(&path).unwrap(), all);

        // Tear the last chunk: the reader reports where, append cuts it and carries on.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let err = read_all(&path).unwrap_err();
        assert!(err.to_string().contains("torn chunk"), "{err}");
        let w = ArchiveWriter::append(&path, Format::Firehose).unwrap();
        w.finish().unwrap();
        let kept = read_all(&path).unwrap();
        assert!(!kept.is_empty() && kept.len() < all.len());
        assert_eq!(kept[..], all[..kept.len()]);
        assert!(ArchiveWriter::append(&path, Format::Jetstream).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

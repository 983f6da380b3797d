//! Scratch files written once and read once, past the page cache.
//!
//! The initial load spills its sorted runs to scratch files and reads each back once, in the
//! merge. Through the page cache every byte was copied into freshly allocated cache pages on
//! the way out: in a profile of `init` at 5M + 5M rows that copy (`copy_folio_from_iter_atomic`)
//! was the largest single symbol, 10.5% of all samples, at about 250 MB/s. On a virtual machine
//! that hands freed memory back to its host (free page reporting, as on this project's machines)
//! each fresh page costs a fault in the host too; `dd` to the same disk measured 250 MB/s
//! buffered against 2.8 GB/s with `O_DIRECT`. Cached pages would never be read a second time
//! anyway, so these files are opened with `O_DIRECT` where the file system allows it and fall
//! back to ordinary I/O where it does not (tmpfs before Linux 6.6, other systems): the bytes
//! are the same either way.
//!
//! `O_DIRECT` wants buffers, offsets and lengths aligned to the device's block, so the writer
//! fills an aligned buffer and writes whole blocks, pads the last one, and cuts the file back to
//! the bytes written; the reader reads whole aligned blocks and stops at the end of the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Alignment of buffers, offsets and lengths: 4 KiB covers 512-byte and 4 KiB block devices.
const ALIGN: usize = 4096;

/// A heap buffer whose usable part starts at an [`ALIGN`]ed address.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` rounded up to whole blocks.
    fn new(len: usize) -> Self {
        let len = len.div_ceil(ALIGN).max(1) * ALIGN;
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Opens `path` with `O_DIRECT` where the platform and file system allow it, else as usual.
fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = options.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Ok(file) => return Ok(file),
            // The file system refuses O_DIRECT (tmpfs before Linux 6.6): ordinary I/O below.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    options.open(path)
}

/// Writes a new scratch file through an aligned buffer; [`ScratchWriter::finish`] completes it.
pub struct ScratchWriter {
    file: File,
    buf: AlignedBuf,
    filled: usize,
    written: u64,
}

impl ScratchWriter {
    /// Creates (or truncates) `path`; `buffer` bytes are written at a time.
    pub fn create(path: &Path, buffer: usize) -> io::Result<ScratchWriter> {
        let file = open(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        Ok(ScratchWriter {
            file,
            buf: AlignedBuf::new(buffer),
            filled: 0,
            written: 0,
        })
    }

    /// Writes the buffer's first `len` bytes (a multiple of [`ALIGN`]).
    fn write_blocks(&mut self, len: usize) -> io::Result<()> {
        self.file.write_all(&self.buf.bytes()[..len])?;
        self.written += len as u64;
        Ok(())
    }

    /// Writes what is buffered (the last block padded) and cuts the file to the bytes written.
    pub fn finish(mut self) -> io::Result<()> {
        let logical = self.written + self.filled as u64;
        let padded = self.filled.div_ceil(ALIGN) * ALIGN;
        self.buf.bytes_mut()[self.filled..padded].fill(0);
        self.write_blocks(padded)?;
        self.file.set_len(logical)
    }
}

impl Write for ScratchWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.len - self.filled;
        let n = data.len().min(room);
        self.buf.bytes_mut()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == self.buf.len {
            self.write_blocks(self.buf.len)?;
            self.filled = 0;
        }
        Ok(n)
    }

    /// Whole blocks only go out as the buffer fills; the rest waits for [`Self::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a scratch file from its start through an aligned buffer.
pub struct ScratchReader {
    file: File,
    buf: AlignedBuf,
    pos: usize,
    end: usize,
    /// A read came back short: the end of the file (reading on from an unaligned offset would
    /// be refused under `O_DIRECT`).
    at_end: bool,
}

impl ScratchReader {
    pub fn open(path: &Path, buffer: usize) -> io::Result<ScratchReader> {
        let file = open(path, OpenOptions::new().read(true))?;
        Ok(ScratchReader {
            file,
            buf: AlignedBuf::new(buffer),
            pos: 0,
            end: 0,
            at_end: false,
        })
    }

    /// Fills the buffer from the file: whole buffers until the file's end.
    fn refill(&mut self) -> io::Result<()> {
        let mut got = 0;
        while got < self.buf.len {
            let n = self.file.read(&mut self.buf.bytes_mut()[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.at_end = got < self.buf.len;
        self.pos = 0;
        self.end = got;
        Ok(())
    }
}

impl Read for ScratchReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            if self.at_end {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf.bytes()[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of every length around the block and buffer sizes read back byte for byte, through
    /// reads of odd sizes, and have exactly the length written.
    #[test]
    fn what_is_written_reads_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let buffer = 3 * ALIGN;
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            buffer,
            buffer + 7,
            5 * buffer + 123,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("run-{len}"));
            let mut w = ScratchWriter::create(&path, buffer).expect("create");
            for piece in data.chunks(1000) {
                w.write_all(piece).expect("write");
            }
            w.finish().expect("finish");
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), len as u64);
            let mut r = ScratchReader::open(&path, buffer).expect("open");
            let mut back = Vec::new();
            let mut piece = [0u8; 777];
            loop {
                let n = r.read(&mut piece).expect("read");
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&piece[..n]);
            }
            assert_eq!(back, data, "length {len}");
        }
    }
}

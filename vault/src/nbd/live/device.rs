//! One disk of a live failover as one NBD connection sees it: reads of done ranges from the
//! image, of the rest from the point (verified); writes, write-zeroes and trims into the image,
//! marking their ranges done so hydration never copies over them; flush and FUA make the image
//! and the hydration map durable.

use replog_nbd::{BlockDevice, DATA, Extents, HOLE, NbdError, NbdErrorKind};
use replog_reader::DiskReader;

use super::target::Target;
use crate::error::VaultErrorKind;
use crate::nbd::errors::read_error;
use crate::nbd::point::view_extents;

/// One live disk for one connection.
#[derive(Debug)]
pub(super) struct LiveDisk<'a> {
    pub(super) reader: DiskReader<'a>,
    pub(super) target: &'a Target,
}

impl LiveDisk<'_> {
    fn flush_now(&self) -> Result<(), NbdError> {
        self.target.persist().map(drop).map_err(|e| {
            let kind = match e.kind() {
                VaultErrorKind::NoSpace => NbdErrorKind::NoSpace,
                _ => NbdErrorKind::Io,
            };
            NbdError::new(kind, "making the image durable").with_source(e)
        })
    }
}

impl BlockDevice for LiveDisk<'_> {
    fn size(&self) -> u64 {
        self.target.size
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let end = offset + buf.len() as u64;
        // Looked up under the lock, read outside it: a done range stays done, and hydration
        // never writes one.
        let done = self.target.lock().done_in(offset, end);
        let mut at = offset;
        for (start, stop) in done.into_iter().chain([(end, end)]) {
            if at < start {
                let gap = &mut buf[(at - offset) as usize..(start - offset) as usize];
                self.reader
                    .read_at(at, gap)
                    .map_err(read_error("reading the point"))?;
            }
            let out = &mut buf[(start - offset) as usize..(stop - offset) as usize];
            if !out.is_empty() {
                self.target
                    .read(start, out)
                    .map_err(|e| NbdError::io("reading the image", e))?;
            }
            at = stop;
        }
        Ok(())
    }

    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError> {
        let done = self.target.lock().done_in(offset, end);
        let mut at = offset;
        for (start, stop) in done {
            if at < start {
                view_extents(&mut self.reader, at, start, out)?;
            }
            if out.is_full() || !self.image_extents(start, stop, out)? {
                return Ok(());
            }
            at = stop;
        }
        if at < end && !out.is_full() {
            view_extents(&mut self.reader, at, end, out)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdError> {
        self.target
            .write(offset, data)
            .map_err(|e| NbdError::io("writing the image", e))?;
        if fua { self.flush_now() } else { Ok(()) }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, fua: bool) -> Result<(), NbdError> {
        self.target
            .zero(offset, len)
            .map_err(|e| NbdError::io("zeroing a range of the image", e))?;
        if fua { self.flush_now() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), NbdError> {
        self.flush_now()
    }
}

impl LiveDisk<'_> {
    /// The allocation of a done range `[start, end)`, from the image's holes and data.
    fn image_extents(&self, start: u64, end: u64, out: &mut Extents) -> Result<bool, NbdError> {
        let mut at = start;
        while at < end {
            if !out.charge() {
                return Ok(false);
            }
            let next = self
                .target
                .next_data(at)
                .map_err(|e| NbdError::io("mapping the image", e))?;
            let (data_start, data_end) = next.unwrap_or((end, end));
            let hole_end = data_start.clamp(at, end);
            if !out.push(hole_end - at, HOLE) {
                return Ok(false);
            }
            let data_end = data_end.clamp(hole_end, end);
            if data_end == at {
                // The filesystem said nothing useful: call the rest data, which is always true.
                return Ok(out.push(end - at, DATA));
            }
            if !out.push(data_end - hole_end, DATA) {
                return Ok(false);
            }
            at = data_end;
        }
        Ok(true)
    }
}

//! Walking the journal's hash chain (see `replog_format::chain`) while a verify reads every
//! record: each link is hashed record by record and checked against the next point's chain hash
//! or the next segment header's start value, and what was proven is summed up.
//!
//! The walk starts at the first segment verify reads, from the value its header holds: the
//! records before it are gone (compaction dropped them), so that value is the anchor. A point
//! whose records before it cannot all be read (a released prefix, a dead range whose pages may
//! be a hole) starts the walk again from its own chain hash: from there on every record is
//! proven again, and the summary counts the restart.

use replog_format::chain::{ChainHash, ChainKey, Link};
use replog_format::record::{PointPayload, RecordHeader};

/// What a verify proved of the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainSummary {
    /// Records folded into the chain and found to agree.
    pub records: u64,
    /// Points whose chain hash the records before them reproduced.
    pub points_proven: u64,
    /// Points written before the chain existed (no chain hash).
    pub points_unchained: u64,
    /// Where the walk started again without the records before: (LSN of the first record
    /// folded, why).
    pub anchors: Vec<(u64, &'static str)>,
    /// The newest point with a chain hash: (point id, LSN, chain hash).
    pub newest: Option<(u64, u64, ChainHash)>,
    /// Disagreements found (also reported as damage).
    pub broken: u64,
}

/// The walk's state between records.
#[derive(Debug)]
pub(crate) struct ChainWalk {
    key: ChainKey,
    /// The link being hashed; `None` before the first anchor, after records that could not be
    /// read, and in segments from before the chain.
    link: Option<Link>,
    /// The LSN the next record must have for the link to stay proven.
    next_lsn: Option<u64>,
    pub(crate) summary: ChainSummary,
}

impl ChainWalk {
    pub(crate) fn new(key: ChainKey) -> ChainWalk {
        ChainWalk {
            key,
            link: None,
            next_lsn: None,
            summary: ChainSummary::default(),
        }
    }

    /// A segment starts, its header holding `start` and its first record `first_lsn`; `live`
    /// when its scan starts later than its first record (a released prefix). Returns a problem
    /// when the header disagrees with the records before it.
    pub(crate) fn segment(
        &mut self,
        start: Option<ChainHash>,
        first_lsn: u64,
        live: bool,
    ) -> Option<String> {
        let mut problem = None;
        let before = self
            .link
            .take()
            .filter(|_| self.next_lsn == Some(first_lsn));
        match (start, before) {
            (Some(s), Some(link)) if s != link.value() => {
                self.summary.broken += 1;
                problem = Some(
                    "the chain value in the segment header is not the one the records before it lead to (a segment of another copy or vault)"
                        .to_owned(),
                );
            }
            (Some(_), None) if !live => self.summary.anchors.push((first_lsn, "segment header")),
            _ => {}
        }
        self.link = start.filter(|_| !live).map(|s| self.key.link(&s));
        self.next_lsn = (!live).then_some(first_lsn);
        problem
    }

    /// Hashes one record; returns a problem when a point's chain hash disagrees with the
    /// records before it.
    pub(crate) fn record(
        &mut self,
        h: &RecordHeader,
        payload: &[u8],
        point: Option<&PointPayload>,
    ) -> Option<String> {
        if self.next_lsn != Some(h.lsn) {
            // Records were stepped over (a dead range, a released prefix): not proven.
            self.link = None;
        }
        self.next_lsn = Some(h.lsn + 1);
        let mut problem = None;
        if let Some(p) = point {
            match (p.chain, &self.link) {
                (None, _) => self.summary.points_unchained += 1,
                (Some(stored), Some(link)) if stored != link.value() => {
                    self.summary.broken += 1;
                    problem = Some(format!(
                        "point {}'s chain hash is not the one the records before it lead to: a record before it was changed, swapped or removed",
                        p.point_id
                    ));
                }
                (Some(_), Some(_)) => self.summary.points_proven += 1,
                (Some(_), None) => self.summary.anchors.push((h.lsn, "point")),
            }
            if let Some(stored) = p.chain {
                // Go on from the point's value, so that one change is reported once.
                self.link = Some(self.key.link(&stored));
                self.summary.newest = Some((p.point_id, h.lsn, stored));
            }
        }
        if let Some(link) = &mut self.link {
            link.record(&h.encode(), payload);
            self.summary.records += 1;
        }
        problem
    }

    /// A segment could not be scanned: nothing after it is proven by what came before.
    pub(crate) fn lost(&mut self) {
        self.link = None;
        self.next_lsn = None;
    }
}

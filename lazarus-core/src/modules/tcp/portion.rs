//! The tcp portion's byte form: what a checkpoint keeps of the tracker.

use super::{dir_flags, TcpDirState, TcpPortion, TcpState};
use crate::modules::Module;
use crate::portion::{Portion, PortionError, Reader, Writer, PORTION_FORMAT};

/// Bytes of the tcp portion after its format byte: state, seen-reply, and
/// per direction end, maxend, maxwin, maxack, scale, flags.
const TCP_FIXED: usize = 2 + 2 * 18;

const _: () = assert!(TcpPortion::WORDS_LEN <= shm_layout::L4_PORTION_MAX);

impl TcpPortion {
    /// The portion is about to be checkpointed: remember the edges it carries,
    /// and it no longer needs a restored connection's slack.
    pub fn checkpointed(&mut self) {
        self.ckpt_end = [self.dirs[0].end, self.dirs[1].end];
        for d in &mut self.dirs {
            d.flags &= !dir_flags::RESTORED;
        }
    }

    /// Bytes of [`encode_words`](Self::encode_words)'s encoding.
    pub const WORDS_LEN: usize = 1 + TCP_FIXED;

    /// What [`encode`](Self::encode) writes, as little-endian words built in
    /// registers (the first [`WORDS_LEN`](Self::WORDS_LEN) bytes), for a sink
    /// that stores and checksums whole words: the packet path's delta, with
    /// no narrow stores read back.
    #[inline(always)]
    pub fn encode_words(&self) -> [u64; 5] {
        #[inline(always)]
        fn put(w: &mut [u64; 5], at: usize, v: u64, bytes: usize) {
            let (i, sh) = (at / 8, (at % 8) * 8);
            w[i] |= v << sh;
            if sh + bytes * 8 > 64 {
                w[i + 1] |= v >> (64 - sh);
            }
        }
        let mut w = [0u64; 5];
        put(&mut w, 0, u64::from(PORTION_FORMAT), 1);
        put(&mut w, 1, self.state as u64, 1);
        put(&mut w, 2, u64::from(self.seen_reply), 1);
        for (k, d) in self.dirs.iter().enumerate() {
            let at = 3 + 18 * k;
            put(&mut w, at, u64::from(d.end), 4);
            put(&mut w, at + 4, u64::from(d.maxend), 4);
            put(&mut w, at + 8, u64::from(d.maxwin), 4);
            put(&mut w, at + 12, u64::from(d.maxack), 4);
            put(&mut w, at + 16, u64::from(d.scale), 1);
            put(&mut w, at + 17, u64::from(d.flags & !dir_flags::RESTORED), 1);
        }
        w
    }
}

/// The largest window TCP can announce (65535 << 14, rounded up to 2^30).
pub const MAX_WINDOW: u32 = 1 << 30;

impl Portion for TcpPortion {
    const MODULE: Module = Module::Tcp;
    const MAX_LEN: usize = shm_layout::L4_PORTION_MAX;

    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Tcp);
        if let Some(mut f) = w.fields::<{ TCP_FIXED }>() {
            f.u8(self.state as u8);
            f.u8(self.seen_reply as u8);
            for d in &self.dirs {
                f.u32(d.end);
                f.u32(d.maxend);
                f.u32(d.maxwin);
                f.u32(d.maxack);
                f.u8(d.scale);
                f.u8(d.flags & !dir_flags::RESTORED);
            }
        }
        w.finish()
    }

    /// A portion read back from a checkpoint: marked restored, so its window
    /// checks allow for edges that moved after it was written.
    fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Tcp)?;
        let mut f = r.fields::<{ TCP_FIXED }>()?;
        let st = f.u8();
        if st as usize >= TcpState::COUNT {
            return Err(r.bad("state"));
        }
        let seen_reply = f.bool().ok_or_else(|| r.bad("boolean"))?;
        let mut p = TcpPortion { state: TcpState::from_u8(st), seen_reply, ..Default::default() };
        for d in &mut p.dirs {
            *d = TcpDirState {
                end: f.u32(),
                maxend: f.u32(),
                maxwin: f.u32(),
                maxack: f.u32(),
                scale: f.u8(),
                flags: f.u8() | dir_flags::RESTORED,
            };
            if d.scale > 14 {
                return Err(r.bad("window scale"));
            }
            // Past 2^30 the window checks' wrapping comparisons stop meaning
            // anything (RFC 7323 §2.3): a forged one would pass every segment.
            // Clamped, not refused: a long, odd flow may creep past it live.
            d.maxwin = d.maxwin.min(MAX_WINDOW);
        }
        p.ckpt_end = [p.dirs[0].end, p.dirs[1].end];
        Ok(p)
    }
}

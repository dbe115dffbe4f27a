//! Arbitrary bytes through the ftp module's line handling
//! (`lazarus_core::modules::ftp`): `LineBuf::feed` and `parse_command` /
//! `parse_reply`, and `FtpPortion::feed` with arbitrary sequence numbers.
//!
//! Checked: nothing panics; every line handed out is at most MAX_LINE bytes,
//! ends in '\n' and is a piece of the input; feeding the stream in pieces
//! (cut where the input's first bytes say) gives the same lines and the same
//! skipped count as feeding it whole; an announced port is never 0.
#![no_main]

use lazarus_core::conn::Dir;
use lazarus_core::modules::ftp::{
    parse_command, parse_reply, FtpEvent, FtpPortion, LineBuf, MAX_LINE,
};
use libfuzzer_sys::fuzz_target;

fn check_event(e: Option<FtpEvent>) {
    match e {
        Some(FtpEvent::Active { port, .. })
        | Some(FtpEvent::Passive { port, .. })
        | Some(FtpEvent::ExtendedPassive { port }) => assert_ne!(port, 0),
        None => {}
    }
}

fn lines(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u32) {
    let mut lb = LineBuf::default();
    let mut out = Vec::new();
    let mut skipped = 0;
    for c in chunks {
        skipped += lb.feed(c, |l| {
            assert!(l.len() <= MAX_LINE);
            assert_eq!(l.last(), Some(&b'\n'));
            out.push(l.to_vec());
        });
    }
    (out, skipped)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    check_event(parse_command(stream));
    check_event(parse_reply(stream));

    // Whole, then in pieces of 1..=16 bytes (the low nibble of the first byte + 1).
    let (whole, skipped) = lines(&[stream]);
    let step = usize::from(cuts & 0x0f) + 1;
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    let (split, skipped_split) = lines(&pieces);
    assert_eq!(whole, split);
    assert_eq!(skipped, skipped_split);
    for l in &whole {
        assert!(stream.windows(l.len()).any(|w| w == &l[..]));
        check_event(parse_command(l));
        check_event(parse_reply(l));
    }

    // The same pieces as TCP segments, both directions, with the sequence
    // numbers bent by the first byte's high nibble (retransmissions, gaps, wrap).
    let mut portion = FtpPortion::default();
    let mut seq = u32::from(cuts).wrapping_mul(0x0101_0101).wrapping_sub(40);
    for (i, piece) in pieces.iter().enumerate() {
        let dir = if (cuts >> 4) & 1 == 0 || i % 2 == 0 { Dir::Original } else { Dir::Reply };
        let r = portion.feed(dir, seq, piece);
        check_event(r.event);
        seq = match (cuts >> 5) & 3 {
            0 => seq.wrapping_add(piece.len() as u32),
            1 => seq.wrapping_add(piece.len() as u32 / 2),
            2 => seq.wrapping_add(piece.len() as u32 + 3),
            _ => seq.wrapping_sub(piece.len() as u32),
        };
    }
});

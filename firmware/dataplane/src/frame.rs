//! Working on a pool buffer as one byte slice: the ESP engine and the GRE codec take a buffer and
//! a range (so they can grow headers into the headroom and trailers into the tailroom); a
//! [`PacketBuf`] keeps a data window. These helpers bridge the two without copying.

use dvipsec_ports::PacketBuf;
use std::ops::Range;

/// Exposes the whole storage of `buf` to `work` along with the frame's range in it, then makes
/// the range `work` returns the new frame. On error the frame is left where it was.
pub fn in_storage<E>(
    buf: &mut PacketBuf,
    work: impl FnOnce(&mut [u8], Range<usize>) -> Result<Range<usize>, E>,
    no_room: E,
) -> Result<(), E> {
    let (head, tail, len) = (buf.headroom(), buf.tailroom(), buf.len());
    if buf.prepend(head).is_err() {
        return Err(no_room);
    }
    if buf.append(tail).is_err() {
        let _ = buf.trim_front(head);
        return Err(no_room);
    }
    let total = buf.len();
    match work(buf.data_mut(), head..head + len) {
        Ok(range) if range.start <= range.end && range.end <= total => {
            set_window(buf, range, total);
            Ok(())
        }
        Ok(_) => {
            set_window(buf, head..head + len, total);
            Err(no_room)
        }
        Err(e) => {
            set_window(buf, head..head + len, total);
            Err(e)
        }
    }
}

/// Narrows a frame that currently spans `0..total` of its storage to `range`.
fn set_window(buf: &mut PacketBuf, range: Range<usize>, total: usize) {
    // Both trims are within the frame: range lies inside 0..total, checked by the caller.
    let _ = buf.trim_back(total - range.end);
    let _ = buf.trim_front(range.start);
}

/// Narrows the frame to `range` (relative to the current frame).
pub fn narrow(buf: &mut PacketBuf, range: Range<usize>) -> bool {
    let len = buf.len();
    if range.start > range.end || range.end > len {
        return false;
    }
    buf.trim_back(len - range.end).is_ok() && buf.trim_front(range.start).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_ports::{BufLayout, Pool};

    #[test]
    fn work_sees_the_headroom_and_its_range_becomes_the_frame() {
        let pool = Pool::new(BufLayout::new(8, 64, 4).unwrap(), 1).unwrap();
        let mut buf = pool.alloc().unwrap();
        buf.set_frame(b"abc").unwrap();
        in_storage(
            &mut buf,
            |bytes, range| {
                assert_eq!(range, 8..11);
                assert_eq!(bytes.len(), 76);
                bytes[6..8].copy_from_slice(b"<<");
                Ok::<_, ()>(6..11)
            },
            (),
        )
        .unwrap();
        assert_eq!(buf.data(), b"<<abc");
        assert_eq!(buf.headroom(), 6);
        let failed = in_storage(&mut buf, |_, _| Err("nope"), "room");
        assert_eq!(failed, Err("nope"));
        assert_eq!(buf.data(), b"<<abc");
        assert_eq!(
            in_storage(&mut buf, |_, _| Ok(0..1000), "room"),
            Err("room")
        );
        assert_eq!(buf.data(), b"<<abc");
        assert!(narrow(&mut buf, 2..4));
        assert_eq!(buf.data(), b"ab");
        assert!(!narrow(&mut buf, 1..3));
    }
}

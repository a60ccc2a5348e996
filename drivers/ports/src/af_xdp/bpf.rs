//! The few bpf(2) calls an AF_XDP port needs: an XSKMAP, an XDP program that redirects the
//! frames of a receive queue to the socket in that map (all of them, or only IPsec traffic),
//! and a BPF link that attaches it to the interface. The link detaches the program when its
//! descriptor closes, so a crashed process leaves nothing attached.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP_ATTACH_TYPE: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
/// Generic (skb) XDP: works on any device, veth included.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// Offset of `rx_queue_index` in `struct xdp_md`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    /// dst register in the low nibble, src register in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// r2 = ctx->rx_queue_index; r1 = &xsks_map; r3 = XDP_PASS;
/// return bpf_redirect_map(r1, r2, r3)  (XDP_PASS when the queue has no socket).
fn redirect_program(map_fd: RawFd) -> [BpfInsn; 6] {
    const LDX_MEM_W: u8 = 0x61;
    const LD_IMM64: u8 = 0x18;
    const MOV64_IMM: u8 = 0xb7;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    [
        insn(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Which frames the program gives the socket; the others go on to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Steering {
    /// Every frame of the queue.
    #[default]
    Everything,
    /// IPv4 frames carrying ESP (protocol 50), GRE (47), or UDP to port 4500 that is not IKE
    /// (its first four payload bytes are not the zero non-ESP marker). ARP, IKE and the
    /// kernel's own traffic (the XCF streams) stay with the kernel.
    IpsecOnly,
}

/// The `IpsecOnly` program: checks as above, then the redirect of [`redirect_program`];
/// frames too short for a check are passed.
fn ipsec_only_program(map_fd: RawFd) -> [BpfInsn; 29] {
    const MOV64_REG: u8 = 0xbf;
    const ADD64_IMM: u8 = 0x07;
    const LDX_MEM_W: u8 = 0x61;
    const LDX_MEM_H: u8 = 0x69;
    const LDX_MEM_B: u8 = 0x71;
    const JGT_REG: u8 = 0x2d;
    const JNE_IMM: u8 = 0x55;
    const JEQ_IMM: u8 = 0x15;
    const LD_IMM64: u8 = 0x18;
    const MOV64_IMM: u8 = 0xb7;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    // Loads are little-endian: EtherType 0x0800 reads as 0x0008, port 4500 (0x1194) as 0x9411.
    const ETHERTYPE_IPV4: i32 = 0x0008;
    const PORT_4500: i32 = 0x9411;
    // Instruction indexes of the two exits; a jump's offset counts from the next instruction.
    const REDIRECT: i16 = 21;
    const PASS: i16 = 27;
    let to = |target: i16, from: i16| target - (from + 1);
    [
        insn(MOV64_REG, 6, 1, 0, 0),                      // 0: r6 = ctx
        insn(LDX_MEM_W, 2, 6, 0, 0),                      // 1: r2 = data
        insn(LDX_MEM_W, 3, 6, 4, 0),                      // 2: r3 = data_end
        insn(MOV64_REG, 4, 2, 0, 0),                      // 3
        insn(ADD64_IMM, 4, 0, 0, 38),                     // 4: Ethernet + IPv4 + 4 bytes
        insn(JGT_REG, 4, 3, to(PASS, 5), 0),              // 5
        insn(LDX_MEM_H, 5, 2, 12, 0),                     // 6: EtherType
        insn(JNE_IMM, 5, 0, to(PASS, 7), ETHERTYPE_IPV4), // 7
        insn(LDX_MEM_B, 5, 2, 23, 0),                     // 8: IP protocol
        insn(JEQ_IMM, 5, 0, to(REDIRECT, 9), 50),         // 9: ESP
        insn(JEQ_IMM, 5, 0, to(REDIRECT, 10), 47),        // 10: GRE
        insn(JNE_IMM, 5, 0, to(PASS, 11), 17),            // 11: not UDP
        insn(LDX_MEM_B, 5, 2, 14, 0),                     // 12: version and header length
        insn(JNE_IMM, 5, 0, to(PASS, 13), 0x45),          // 13: options: the kernel's
        insn(LDX_MEM_H, 5, 2, 36, 0),                     // 14: UDP destination port
        insn(JNE_IMM, 5, 0, to(PASS, 15), PORT_4500),     // 15
        insn(MOV64_REG, 4, 2, 0, 0),                      // 16
        insn(ADD64_IMM, 4, 0, 0, 46),                     // 17: + UDP header + marker
        insn(JGT_REG, 4, 3, to(PASS, 18), 0),             // 18
        insn(LDX_MEM_W, 5, 2, 42, 0),                     // 19: non-ESP marker
        insn(JEQ_IMM, 5, 0, to(PASS, 20), 0),             // 20: IKE
        insn(LDX_MEM_W, 2, 6, XDP_MD_RX_QUEUE_INDEX, 0),  // 21: REDIRECT
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),  // 22
        insn(0, 0, 0, 0, 0),                              // 23
        insn(MOV64_IMM, 3, 0, 0, XDP_PASS),               // 24
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),       // 25
        insn(EXIT, 0, 0, 0, 0),                           // 26
        insn(MOV64_IMM, 0, 0, 0, XDP_PASS),               // 27: PASS
        insn(EXIT, 0, 0, 0, 0),                           // 28
    ]
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Calls bpf(2) with `attr`; the returned descriptor, if any, is the caller's.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union bpf_attr` for this
    // command and its exact size is passed; the kernel reads at most that many bytes (and
    // writes nothing back for the commands used here). Pointers inside it are kept alive by
    // the callers for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad descriptor"))?;
    // SAFETY: bpf(2) just returned this new descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An XSKMAP with one entry per receive queue.
pub fn create_xsk_map(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
    };
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}

/// Puts socket `xsk_fd` in `map` at `queue`.
pub fn set_map_entry(map: RawFd, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
    let value = xsk_fd as u32;
    let mut attr = MapUpdateAttr {
        map_fd: map as u32,
        _pad: 0,
        key: std::ptr::addr_of!(queue) as u64,
        value: std::ptr::addr_of!(value) as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Loads the redirect program for `map` with `steering`; on a verifier refusal the error
/// carries its log.
pub fn load_redirect_program(map: RawFd, steering: Steering) -> io::Result<OwnedFd> {
    let program: Vec<BpfInsn> = match steering {
        Steering::Everything => redirect_program(map).to_vec(),
        Steering::IpsecOnly => ipsec_only_program(map).to_vec(),
    };
    let license = b"Dual MIT/GPL\0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"dvipsec_x");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP_ATTACH_TYPE,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned(fd),
        Err(err) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                err.kind(),
                format!("{err}; verifier: {}", verifier.trim()),
            ))
        }
    }
}

/// Attaches `program` to interface `ifindex` with `flags`; detached when the link closes.
pub fn attach_xdp(program: RawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP_ATTACH_TYPE,
        flags,
    };
    owned(bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_encodes_as_the_kernel_expects() {
        let program = redirect_program(7);
        let bytes: Vec<[u8; 8]> = program
            .iter()
            .map(|i| {
                let mut b = [i.code, i.regs, 0, 0, 0, 0, 0, 0];
                b[2..4].copy_from_slice(&i.off.to_le_bytes());
                b[4..8].copy_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect();
        assert_eq!(bytes[0], [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[1], [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(bytes[2], [0; 8]);
        assert_eq!(bytes[3], [0xb7, 0x03, 0, 0, 2, 0, 0, 0]);
        assert_eq!(bytes[4], [0x85, 0, 0, 0, 51, 0, 0, 0]);
        assert_eq!(bytes[5], [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
    }

    #[test]
    fn the_ipsec_filter_jumps_only_to_its_two_exits_and_loads_inside_its_checks() {
        let program = ipsec_only_program(7);
        const JUMPS: [u8; 3] = [0x2d, 0x55, 0x15];
        for (pc, i) in program.iter().enumerate() {
            if JUMPS.contains(&i.code) {
                let target = pc as i16 + 1 + i.off;
                assert!(
                    target == 21 || target == 27,
                    "jump at {pc} lands on {target}"
                );
            }
            // Packet loads (base r2) stay inside the range the checks before them proved.
            if matches!(i.code, 0x61 | 0x69 | 0x71) && i.regs >> 4 == 2 {
                let width = match i.code {
                    0x61 => 4,
                    0x69 => 2,
                    _ => 1,
                };
                let proven = if pc < 19 { 38 } else { 46 };
                assert!(i.off + width <= proven, "load at {pc} reads past {proven}");
            }
        }
        assert_eq!(program[26].code, 0x95);
        assert_eq!(program[28].code, 0x95);
        assert_eq!(program[27].imm, XDP_PASS);
    }
}

//! Running a loaded program on a packet with `BPF_PROG_TEST_RUN`, for tests and benchmarks.

use std::time::Duration;

use aya::programs::{Program as AyaProgram, TestRun, TestRunOptions};

use super::error::{DataplaneError, Result};
use super::programs::Program;

/// `struct xdp_md`, the XDP test-run context.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// `sizeof(struct __sk_buff)`: the kernel copies the whole context back and fails with
/// ENOSPC into a smaller buffer. Only `ifindex` is set going in, `mark` read coming out.
const SKB_CTX_LEN: usize = 192;
const SKB_MARK_OFFSET: usize = 8;
const SKB_IFINDEX_OFFSET: usize = 40;

/// One test run's input.
#[derive(Clone, Copy, Debug)]
pub struct TestRunInput<'a> {
    /// XDP: the frame. TC: the packet as the program sees it from offset 0: an Ethernet frame
    /// for a program on an Ethernet device, the bare IP packet for one on the TUN (the kernel
    /// reads the first 14 bytes as an Ethernet header to set the skb's protocol, then hands
    /// the program the data from its start again, whatever device `ifindex` names).
    pub data: &'a [u8],
    /// The interface the packet arrives on (XDP) or is on (TC); 0: loopback.
    pub ifindex: u32,
    /// Runs of the program on the same input (for timing); 1 for a test.
    pub repeat: u32,
}

#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// The program's return value (XDP action or TC verdict).
    pub verdict: u32,
    /// The packet afterwards (XDP: without the metadata area).
    pub data: Vec<u8>,
    /// XDP: the metadata area in front of the packet.
    pub meta: Vec<u8>,
    /// TC: the skb's mark afterwards.
    pub mark: u32,
    /// Mean time per run, as the kernel measured it.
    pub duration: Duration,
}

/// Runs `program` (the loaded `which`) once, or `repeat` times, on `input` with
/// `BPF_PROG_TEST_RUN`.
pub(super) fn test_run(
    program: &AyaProgram,
    which: Program,
    input: &TestRunInput<'_>,
) -> Result<TestRunOutput> {
    let what = || format!("test run of {}", which.name());
    // Room for what the programs add: headers, padding and tag.
    let mut out = vec![0u8; input.data.len() + 256];
    let repeat = input.repeat.max(1);
    match program {
        AyaProgram::Xdp(p) => {
            let ctx_in = XdpMd {
                data_end: input.data.len() as u32,
                ingress_ifindex: input.ifindex,
                ..XdpMd::default()
            };
            let mut ctx_out = XdpMd::default();
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(input.data),
                    data_out: Some(&mut out),
                    ctx_in: Some(as_bytes(&ctx_in)),
                    ctx_out: Some(as_bytes_mut(&mut ctx_out)),
                    repeat,
                    ..TestRunOptions::default()
                })
                .map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
            out.truncate(r.data_size_out as usize);
            let meta_len = (ctx_out.data as usize).min(out.len());
            let data = out.split_off(meta_len);
            Ok(TestRunOutput {
                verdict: r.return_value,
                data,
                meta: out,
                mark: 0,
                duration: r.duration,
            })
        }
        AyaProgram::SchedClassifier(p) => {
            let mut ctx = [0u8; SKB_CTX_LEN];
            ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4]
                .copy_from_slice(&input.ifindex.to_ne_bytes());
            let mut ctx_out = [0u8; SKB_CTX_LEN];
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(input.data),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx[..]),
                    ctx_out: Some(&mut ctx_out[..]),
                    repeat,
                    ..TestRunOptions::default()
                })
                .map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
            out.truncate(r.data_size_out as usize);
            let mark = &ctx_out[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4];
            Ok(TestRunOutput {
                verdict: r.return_value,
                data: out,
                meta: Vec::new(),
                mark: u32::from_ne_bytes(mark.try_into().unwrap_or_default()),
                duration: r.duration,
            })
        }
        _ => Err(DataplaneError::Object(format!("{} has an unexpected type", which.name()))),
    }
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: a plain repr(C) value without padding, viewed as its bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

fn as_bytes_mut<T: Copy>(v: &mut T) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every byte pattern is a valid XdpMd.
    unsafe { std::slice::from_raw_parts_mut(v as *mut T as *mut u8, size_of::<T>()) }
}

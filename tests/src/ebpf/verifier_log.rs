//! The verifier's own statistics for every program of the embedded object: instructions
//! processed, states (total, peak, most per instruction), stack depth and time, as its
//! `BPF_LOG_STATS` log prints them.
//!
//! aya returns the verifier's log only when a load fails, so this loads each program once
//! more by itself, the way aya does: the object parsed by aya's own parser (aya-obj), its BTF
//! loaded, a throwaway map of each definition created and relocated in, calls linked, and
//! `BPF_PROG_LOAD` with the statistics log level. Every file descriptor closes on return.

use std::collections::HashSet;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, anyhow, bail};
use aya_obj::btf::BtfFeatures;
use aya_obj::generated::{BPF_F_XDP_HAS_FRAGS, bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};
use aya_obj::{Object, ProgramSection};

/// `BPF_LOG_STATS`: the summary lines only, not the walk.
const LOG_LEVEL_STATS: u32 = 4;

/// One program as the verifier summed it up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierStats {
    pub program: String,
    /// Instructions processed, the count the 1,000,000 limit applies to.
    pub instructions: u64,
    pub total_states: u64,
    pub peak_states: u64,
    pub max_states_per_instruction: u64,
    /// Per function, as the verifier prints it (`224+32+208`).
    pub stack_depth: String,
    pub microseconds: u64,
}

/// Loads every program of `object` with the statistics log; an error names a program the
/// verifier refused, with its log's last lines.
pub fn verifier_stats(object: &[u8]) -> Result<Vec<VerifierStats>> {
    let mut obj = Object::parse(object).context("parsing the eBPF object")?;
    // Linux 6.18 has every BTF feature the object uses (what aya probes for).
    let features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf = obj
        .fixup_and_sanitize_btf(&features)
        .context("preparing the object's BTF")?
        .map(|btf| load_btf(&btf.to_bytes()))
        .transpose()?;
    let definitions = obj.maps.clone();
    let mut maps = Vec::new();
    for (name, map) in &definitions {
        maps.push((name.as_str(), create_map(name, map)?, map));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        maps.iter().map(|(name, fd, map)| (*name, fd.as_raw_fd(), *map)),
        &text_sections,
    )
    .context("relocating maps")?;
    obj.relocate_calls(&text_sections).context("linking calls")?;
    let mut stats = Vec::new();
    let mut names: Vec<&String> = obj.programs.keys().collect();
    names.sort();
    for name in names {
        let program = &obj.programs[name];
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| anyhow!("{name}: no function in the object"))?;
        let (ty, attach, flags) = match &program.section {
            ProgramSection::Xdp { frags, .. } => (
                bpf_prog_type::BPF_PROG_TYPE_XDP,
                Some(bpf_attach_type::BPF_XDP),
                if *frags { BPF_F_XDP_HAS_FRAGS } else { 0 },
            ),
            ProgramSection::SchedClassifier => (bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS, None, 0),
            other => bail!("{name}: a {other:?} program, which this loader does not know"),
        };
        let license = program.license.clone();
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        let mut log = vec![0u8; 1 << 16];
        // SAFETY: an all-zero bpf_attr is the kernel's "unset" for every field.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the BPF_PROG_LOAD member of the union; the pointers stay alive (locals)
        // until the syscall returns.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = ty as u32;
        load.expected_attach_type = attach.map_or(0, |a| a as u32);
        load.prog_flags = flags;
        load.insns = function.instructions.as_ptr() as u64;
        load.insn_cnt = function.instructions.len() as u32;
        load.license = license.as_ptr() as u64;
        load.log_level = LOG_LEVEL_STATS;
        load.log_buf = log.as_mut_ptr() as u64;
        load.log_size = log.len() as u32;
        let short: Vec<u8> = name.bytes().take(load.prog_name.len() - 1).collect();
        for (slot, byte) in load.prog_name.iter_mut().zip(short) {
            *slot = byte as _;
        }
        if let Some(btf) = &btf {
            load.prog_btf_fd = btf.as_raw_fd() as u32;
            if function.func_info_rec_size > 0 {
                load.func_info = func_info.as_ptr() as u64;
                load.func_info_cnt = function.func_info.len() as u32;
                load.func_info_rec_size = function.func_info_rec_size as u32;
            }
            if function.line_info_rec_size > 0 {
                load.line_info = line_info.as_ptr() as u64;
                load.line_info_cnt = function.line_info.len() as u32;
                load.line_info_rec_size = function.line_info_rec_size as u32;
            }
        }
        let loaded = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr);
        let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
            .into_owned();
        if let Err(error) = loaded {
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            bail!("the verifier refused {name}: {error}: {}", tail.join(" | "));
        }
        stats.push(parse(name, &text)?);
    }
    Ok(stats)
}

/// The statistics lines of a `BPF_LOG_STATS` log.
pub fn parse(program: &str, log: &str) -> Result<VerifierStats> {
    let mut stats = VerifierStats { program: program.to_string(), ..Default::default() };
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| -> Option<u64> {
            let at = words.iter().position(|w| *w == key)?;
            words.get(at + 1)?.parse().ok()
        };
        if line.starts_with("processed ") {
            stats.instructions = after("processed").unwrap_or(0);
            stats.total_states = after("total_states").unwrap_or(0);
            stats.peak_states = after("peak_states").unwrap_or(0);
            stats.max_states_per_instruction = after("max_states_per_insn").unwrap_or(0);
        } else if let Some(depth) = line.strip_prefix("stack depth ") {
            stats.stack_depth = depth.trim().to_string();
        } else if line.starts_with("verification time ") {
            stats.microseconds = after("time").unwrap_or(0);
        }
    }
    if stats.instructions == 0 {
        bail!("{program}: no statistics in the verifier's log: {log:?}");
    }
    Ok(stats)
}

fn create_map(name: &str, map: &aya_obj::Map) -> Result<OwnedFd> {
    // SAFETY: as in `verifier_stats`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the BPF_MAP_CREATE member of the union.
    let create = unsafe { &mut attr.__bindgen_anon_1 };
    create.map_type = map.map_type();
    create.key_size = map.key_size();
    create.value_size = map.value_size();
    // Sizes the daemon sets at load time may be 0 in the object; any size verifies alike.
    create.max_entries = map.max_entries().max(1);
    create.map_flags = map.map_flags();
    let fd = bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).with_context(|| format!("creating {name}"))?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load_btf(bytes: &[u8]) -> Result<OwnedFd> {
    // SAFETY: as in `verifier_stats`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the BPF_BTF_LOAD member of the union; `bytes` outlives the syscall.
    let load = unsafe { &mut attr.__bindgen_anon_7 };
    load.btf = bytes.as_ptr() as u64;
    load.btf_size = bytes.len() as u32;
    let fd = bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).context("loading the object's BTF")?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bpf(command: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i32> {
    // SAFETY: the bpf syscall with a fully initialised attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc as i32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_read_from_the_log() {
        let log = "func#0 @0\nverification time 1096305 usec\nstack depth 224+32+208\n\
                   processed 123528 insns (limit 1000000) max_states_per_insn 35 total_states \
                   10909 peak_states 1027 mark_read 0\n";
        let stats = parse("wg_tx_tun", log).unwrap();
        assert_eq!(
            stats,
            VerifierStats {
                program: "wg_tx_tun".into(),
                instructions: 123_528,
                total_states: 10_909,
                peak_states: 1027,
                max_states_per_instruction: 35,
                stack_depth: "224+32+208".into(),
                microseconds: 1_096_305,
            }
        );
        assert!(parse("x", "no statistics here").is_err());
    }
}

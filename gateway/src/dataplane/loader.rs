//! Loading the embedded eBPF object: maps sized to the configured capacities, every program
//! through the verifier, the shared arrays mapped into this process. Each map is handed to
//! the typed access that owns it; the programs stay here.

use std::error::Error as _;
use std::io;

use aya::{
    Ebpf, EbpfError, EbpfLoader, VerifierLogLevel,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, ProgramArray,
    },
    programs::{ProgramError, SchedClassifier, Xdp},
};
use gateway_common::maps::{
    Config, DEFAULT_MAX_ALLOWED_IPS, DEFAULT_MAX_PEERS, DEFAULT_MAX_SESSIONS,
    ENTRY_PROGRAM_FORWARD, MAP_ALLOWED_V4, MAP_ALLOWED_V6, MAP_CONFIG, MAP_ENTRY_FLOWS,
    MAP_ENTRY_FORWARDS, MAP_ENTRY_PORTS, MAP_ENTRY_PROGRAMS, MAP_ENTRY_TRAFFIC, MAP_MASQ_IN,
    MAP_MASQ_OUT, MAP_MASQUERADE, MAP_PEERS, MAP_PROXY_FLOWS, MAP_REDIRECT_IFACES, MAP_REPLY_TO,
    MAP_RX_INDEX, MAP_SESSIONS, MAP_STATS, MAP_UNDERLAYS, Peer, Session,
};

use tracing::warn;

use super::allowed_ips::AllowedIpMaps;
use super::attach::Attachments;
use super::config::ConfigMap;
use super::entry::EntryMaps;
use super::error::{DataplaneError, Result};
use super::masquerade::MasqueradeMaps;
use super::mmap::MappedArray;
use super::peers::PeerMaps;
use super::programs::Program;
use super::sessions::SessionMaps;
use super::stats::StatsMap;
use super::verifier::{ProgramReport, Verdict};

/// The object gateway/build.rs builds from gateway-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// The embedded object as built, for tools that inspect it (the verifier statistics of the
/// budget test).
pub fn embedded_object() -> &'static [u8] {
    OBJECT
}

/// The oldest kernel with every helper and flag the programs use (`BPF_FIB_LOOKUP_SRC`).
const MIN_KERNEL: (u32, u32) = (6, 7);

/// Map sizes, fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct Capacities {
    /// Sessions (keypairs) at once: three per peer at most (previous, current, next).
    pub sessions: u32,
    pub peers: u32,
    /// AllowedIPs prefixes per family.
    pub allowed_ips: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            sessions: DEFAULT_MAX_SESSIONS,
            peers: DEFAULT_MAX_PEERS,
            allowed_ips: DEFAULT_MAX_ALLOWED_IPS,
        }
    }
}

/// The loaded programs, and what the verifier made of each (in `Program::ALL` order).
pub(super) struct Programs {
    ebpf: Ebpf,
    reports: Vec<ProgramReport>,
    /// `ENTRY_PROGRAMS`, the programs `wg_rx_xdp` tail-calls. Held open for as long as the
    /// programs are: the kernel empties a program array when its last descriptor closes.
    _entry_programs: ProgramArray<MapData>,
}

impl Programs {
    pub(super) fn reports(&self) -> &[ProgramReport] {
        &self.reports
    }

    pub(super) fn is_loaded(&self, program: Program) -> bool {
        self.reports.iter().any(|report| report.program == program && report.loaded())
    }

    /// Whether any receive program loaded (XDP with its handoff, or TC).
    pub(super) fn receives(&self) -> bool {
        self.is_loaded(Program::RxTc)
            || (self.is_loaded(Program::RxXdp) && self.is_loaded(Program::RxHandoff))
    }

    pub(super) fn get(&self, program: Program) -> Result<&aya::programs::Program> {
        self.ebpf.program(program.name()).ok_or_else(|| missing(program.name()))
    }

    pub(super) fn xdp_mut(&mut self, program: Program) -> Result<&mut Xdp> {
        let p = self.ebpf.program_mut(program.name()).ok_or_else(|| missing(program.name()))?;
        p.try_into().map_err(|e: ProgramError| DataplaneError::Object(e.to_string()))
    }

    pub(super) fn tc_mut(&mut self, program: Program) -> Result<&mut SchedClassifier> {
        let p = self.ebpf.program_mut(program.name()).ok_or_else(|| missing(program.name()))?;
        p.try_into().map_err(|e: ProgramError| DataplaneError::Object(e.to_string()))
    }
}

/// What loading produced, each map with the typed access that owns it.
pub(super) struct Loaded {
    pub(super) programs: Programs,
    pub(super) attachments: Attachments,
    pub(super) sessions: SessionMaps,
    pub(super) peers: PeerMaps,
    pub(super) allowed_ips: AllowedIpMaps,
    pub(super) config: ConfigMap,
    pub(super) stats: StatsMap,
    pub(super) entry: EntryMaps,
    pub(super) masquerade: MasqueradeMaps,
}

/// Loads the object with the given capacities and verifies every program.
pub(super) fn load(capacities: Capacities) -> Result<Loaded> {
    check_kernel()?;
    if capacities.sessions == 0 || capacities.peers == 0 || capacities.allowed_ips == 0 {
        return Err(DataplaneError::Invalid("capacities must be at least 1".into()));
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_SESSIONS, capacities.sessions)
        // Room for a retired index alongside its reused slot's new one: the core may drop a
        // keypair (freeing its slot) before the map learns it was retired.
        .map_max_entries(MAP_RX_INDEX, capacities.sessions.saturating_mul(2))
        .map_max_entries(MAP_PEERS, capacities.peers)
        .map_max_entries(MAP_ALLOWED_V4, capacities.allowed_ips)
        .map_max_entries(MAP_ALLOWED_V6, capacities.allowed_ips)
        .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
        .load(OBJECT)
        .map_err(object_error)?;
    let mut reports = Vec::with_capacity(Program::ALL.len());
    for program in Program::ALL {
        let report = load_program(&mut ebpf, program)?;
        reports.push(report);
    }
    let mut entry_programs =
        ProgramArray::try_from(take(&mut ebpf, MAP_ENTRY_PROGRAMS)?).map_err(map_type)?;
    install_entry_forward(&ebpf, &mut entry_programs, &mut reports);
    for report in reports.iter().filter(|report| !report.loaded()) {
        warn!("data plane: {report}");
    }
    if !reports.iter().any(|report| report.loaded() && report.program != Program::XdpPass) {
        return Err(DataplaneError::Unsupported(
            "the kernel's verifier rejected every data-plane program".into(),
        ));
    }
    let sessions = mapped::<Session>(&mut ebpf, MAP_SESSIONS)?;
    let peers = mapped::<Peer>(&mut ebpf, MAP_PEERS)?;
    let rx_index = HashMap::try_from(take(&mut ebpf, MAP_RX_INDEX)?).map_err(map_type)?;
    let allowed_v4 = LpmTrie::try_from(take(&mut ebpf, MAP_ALLOWED_V4)?).map_err(map_type)?;
    let allowed_v6 = LpmTrie::try_from(take(&mut ebpf, MAP_ALLOWED_V6)?).map_err(map_type)?;
    let config: Array<MapData, Config> =
        Array::try_from(take(&mut ebpf, MAP_CONFIG)?).map_err(map_type)?;
    let stats = PerCpuArray::try_from(take(&mut ebpf, MAP_STATS)?).map_err(map_type)?;
    let redirect_ifaces =
        DevMapHash::try_from(take(&mut ebpf, MAP_REDIRECT_IFACES)?).map_err(map_type)?;
    let underlays = HashMap::try_from(take(&mut ebpf, MAP_UNDERLAYS)?).map_err(map_type)?;
    let entry = EntryMaps::new(
        Array::try_from(take(&mut ebpf, MAP_ENTRY_PORTS)?).map_err(map_type)?,
        Array::try_from(take(&mut ebpf, MAP_ENTRY_FORWARDS)?).map_err(map_type)?,
        HashMap::try_from(take(&mut ebpf, MAP_ENTRY_FLOWS)?).map_err(map_type)?,
        HashMap::try_from(take(&mut ebpf, MAP_PROXY_FLOWS)?).map_err(map_type)?,
        HashMap::try_from(take(&mut ebpf, MAP_REPLY_TO)?).map_err(map_type)?,
        PerCpuArray::try_from(take(&mut ebpf, MAP_ENTRY_TRAFFIC)?).map_err(map_type)?,
    );
    let masquerade = MasqueradeMaps::new(
        Array::try_from(take(&mut ebpf, MAP_MASQUERADE)?).map_err(map_type)?,
        HashMap::try_from(take(&mut ebpf, MAP_MASQ_OUT)?).map_err(map_type)?,
        HashMap::try_from(take(&mut ebpf, MAP_MASQ_IN)?).map_err(map_type)?,
    );
    Ok(Loaded {
        programs: Programs { ebpf, reports, _entry_programs: entry_programs },
        attachments: Attachments::new(redirect_ifaces, underlays),
        sessions: SessionMaps::new(sessions, rx_index),
        peers: PeerMaps::new(peers),
        allowed_ips: AllowedIpMaps::new(allowed_v4, allowed_v6),
        config: ConfigMap::new(config),
        stats: StatsMap::new(stats),
        entry,
        masquerade,
    })
}

/// Puts the forward program in the slot `wg_rx_xdp` tail-calls. The kernel checks there
/// that it can stand in for its caller (same program type, same multi-buffer support); if it
/// refuses, the program counts as refused, with that reason.
fn install_entry_forward(
    ebpf: &Ebpf,
    entry_programs: &mut ProgramArray<MapData>,
    reports: &mut [ProgramReport],
) {
    let Some(report) = reports.iter_mut().find(|r| r.program == Program::EntryForward) else {
        return;
    };
    if !report.loaded() {
        return;
    }
    let installed = ebpf
        .program(Program::EntryForward.name())
        .ok_or_else(|| "not in the object".to_string())
        .and_then(|p| p.fd().map_err(|e| e.to_string()))
        .and_then(|fd| {
            entry_programs.set(ENTRY_PROGRAM_FORWARD, fd, 0).map_err(|e| {
                let detail = e.source().map(|s| format!(": {s}")).unwrap_or_default();
                format!("{e}{detail}")
            })
        });
    if let Err(e) = installed {
        report.verdict =
            Verdict::Rejected { reason: format!("{MAP_ENTRY_PROGRAMS} refused it ({e})") };
    }
}

fn missing(name: &str) -> DataplaneError {
    DataplaneError::Object(format!("no program or map named {name}"))
}

fn map_type(e: MapError) -> DataplaneError {
    DataplaneError::Object(e.to_string())
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name).ok_or_else(|| missing(name))
}

fn mapped<T>(ebpf: &mut Ebpf, name: &str) -> Result<MappedArray<T>> {
    let Map::Array(data) = take(ebpf, name)? else {
        return Err(DataplaneError::Object(format!("{name} is not an array")));
    };
    let info =
        data.info().map_err(|e| DataplaneError::kernel_chain(format!("map info of {name}"), &e))?;
    use std::os::fd::AsFd as _;
    let array = MappedArray::new(data.fd().as_fd(), info.max_entries(), info.value_size())?;
    // The mapping holds its own reference to the map: the fd may close.
    drop(data);
    Ok(array)
}

/// Loads one program through the verifier. A refusal is not an error of the whole data
/// plane: the report says why, and the program's fallback takes over.
fn load_program(ebpf: &mut Ebpf, program: Program) -> Result<ProgramReport> {
    let p = ebpf.program_mut(program.name()).ok_or_else(|| missing(program.name()))?;
    let loaded = if program.is_xdp() {
        let p: &mut Xdp = p.try_into().map_err(|e: ProgramError| map_object(e))?;
        p.load()
    } else {
        let p: &mut SchedClassifier = p.try_into().map_err(|e: ProgramError| map_object(e))?;
        p.load()
    };
    match loaded {
        Ok(()) => {
            let instructions = ebpf
                .program(program.name())
                .and_then(|p| p.info().ok())
                .and_then(|info| info.verified_instruction_count());
            Ok(ProgramReport { program, verdict: Verdict::Loaded { instructions } })
        }
        // EPERM is a missing capability; the verifier's own refusals are EACCES/EINVAL/E2BIG.
        Err(ProgramError::LoadError { io_error, .. })
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            Err(permission())
        }
        Err(ProgramError::LoadError { io_error, verifier_log }) => {
            Ok(ProgramReport::rejected(program, &io_error, &verifier_log.to_string()))
        }
        Err(other) => {
            Err(DataplaneError::kernel_chain(format!("loading {}", program.name()), &other))
        }
    }
}

fn map_object(e: ProgramError) -> DataplaneError {
    DataplaneError::Object(e.to_string())
}

fn permission() -> DataplaneError {
    DataplaneError::Permission(
        "loading eBPF programs needs CAP_BPF and CAP_NET_ADMIN (run as root or grant them)".into(),
    )
}

/// Whether an error chain bottoms out in EPERM (a missing capability).
fn is_permission(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn object_error(e: EbpfError) -> DataplaneError {
    if is_permission(&e) {
        return permission();
    }
    if matches!(e, EbpfError::BtfError(_) | EbpfError::NoBTF)
        && !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
    {
        return DataplaneError::Unsupported(format!(
            "the kernel has no BTF (CONFIG_DEBUG_INFO_BTF): {e}"
        ));
    }
    let detail = e.source().map(|s| format!(": {s}")).unwrap_or_default();
    DataplaneError::Object(format!("{e}{detail}"))
}

/// The running kernel's (major, minor) version.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel() -> Result<()> {
    match kernel_version() {
        Some(v) if v < MIN_KERNEL => Err(DataplaneError::Unsupported(format!(
            "Linux {}.{} is older than {}.{}, the oldest with every BPF helper the data plane uses",
            v.0, v.1, MIN_KERNEL.0, MIN_KERNEL.1
        ))),
        _ => Ok(()),
    }
}

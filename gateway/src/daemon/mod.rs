//! `gatewayd`: the process around the protocol core. It behaves like `wireguard-go`: creates
//! the TUN interface, serves the UAPI socket, daemonizes unless told not to, and exits cleanly
//! (removing socket and interface) on SIGTERM, SIGINT or deletion of the interface. Under a
//! systemd `Type=notify` unit (`-f`) it reports READY=1 once it serves and STOPPING=1 when it
//! shuts down (`notify.rs`).
//!
//! Everything that can fail for a reason the operator can fix (bad name, interface or port
//! taken, metrics address taken, missing privileges, no eBPF) fails before the process
//! detaches, with one line naming the problem and nothing left behind.

pub mod config_file;
pub mod control;
pub mod core;
pub mod ebpf;
pub mod forward_socket;
pub mod forwards;
pub mod io;
pub mod link;
pub mod masquerade;
pub mod network;
pub mod notify;
pub mod path_mtu;
pub mod proxy_nat;
pub mod reload;
pub mod status;
pub mod steering;
pub mod udp;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;

use self::control::Control;
use self::core::{Core, Shared};
use self::forwards::{DaemonHost, EntryPoint};
use self::udp::Sockets;
use crate::dataplane::DataplaneError;
use crate::tun::{self, Tun};
use crate::uapi::{self, ServeEnd, UapiServer};
use crate::wg::device::{Device, DeviceOptions};
use crate::wg::timers::TimerScale;

#[derive(Debug, Clone)]
pub struct Options {
    pub interface: String,
    pub foreground: bool,
    /// Keep stdout/stderr in the background process (wireguard-go does so when LOG_LEVEL is
    /// set); otherwise they go to /dev/null so callers capturing output are not held open.
    pub keep_output: bool,
    pub timer_divisor: u32,
    /// None: the userspace data path only (`--no-ebpf`).
    pub ebpf: Option<ebpf::EbpfOptions>,
    pub capacities: crate::dataplane::Capacities,
    /// Where the interface's state (its forwards) is kept (`/var/lib/gatewayd/<ifname>`).
    pub state_directory: PathBuf,
    /// Public keys of peers that are entry points besides those holding a default route
    /// (`--entry-peer`; see `wg::device::entry`).
    pub entry_peers: Vec<[u8; 32]>,
    /// Where the Prometheus metrics are served (`--metrics`); None: nowhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--masquerade OUTIF`: peers' traffic out of OUTIF leaves with its address.
    pub masquerade: Option<String>,
    /// What `--config` applies at start (keys, peers, addresses, routes, forwards); None: the
    /// interface starts empty and is configured over UAPI.
    pub config: Option<config_file::StartConfig>,
}

#[derive(Debug)]
pub enum DaemonError {
    Tun(tun::TunError),
    Udp(udp::BindError),
    Uapi(uapi::BindError),
    Privileges,
    Dataplane(crate::dataplane::DataplaneError),
    Io(&'static str, std::io::Error),
    /// The saved forwards cannot be loaded.
    Forwards(String),
    /// The metrics address cannot be listened on.
    Metrics(crate::metrics::server::BindError),
    /// `--masquerade` cannot be set up.
    Masquerade(String),
    /// The configuration file (`--config`) could not be applied.
    Config(String),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Tun(e) => e.fmt(f),
            DaemonError::Udp(e) => e.fmt(f),
            DaemonError::Uapi(e) => e.fmt(f),
            DaemonError::Privileges => {
                f.write_str("missing privileges: gatewayd needs CAP_NET_ADMIN (run it as root)")
            }
            DaemonError::Dataplane(e) => write!(f, "eBPF data plane: {e}"),
            DaemonError::Io(what, e) => write!(f, "{what}: {e}"),
            DaemonError::Forwards(e) => f.write_str(e),
            DaemonError::Metrics(e) => e.fmt(f),
            DaemonError::Masquerade(e) => f.write_str(e),
            DaemonError::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Everything acquired before detaching; dropping it releases all of it.
struct Setup {
    tun: Tun,
    sockets: Sockets,
    uapi: (std::os::unix::net::UnixListener, uapi::SocketFile),
    /// None when eBPF is off or could not be set up (then said once, in the log).
    ebpf: Option<ebpf::EbpfSink>,
    entry: EntryPoint,
    /// The metrics endpoint's listening socket (`--metrics`).
    metrics: Option<std::net::TcpListener>,
    /// `--masquerade`: undone when dropped, after the data plane.
    masquerade: Option<masquerade::Masquerade>,
}

/// CAP_NET_ADMIN, from the effective capability set in /proc/self/status.
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn acquire(options: &Options) -> Result<Setup, DaemonError> {
    tun::validate_name(&options.interface).map_err(DaemonError::Tun)?;
    if !has_net_admin() {
        return Err(DaemonError::Privileges);
    }
    // The saved forwards before anything is created: a damaged file is the operator's to fix.
    let entry = match &options.config {
        // The file's forwards, already checked with it, and kept in it from now on.
        Some(start) => EntryPoint::with_table(
            crate::entry::store::ForwardsHome::ConfigFile(start.path.clone()),
            start.forwards.clone(),
        ),
        None => EntryPoint::open(options.state_directory.clone()).map_err(DaemonError::Forwards)?,
    };
    let socket_path = uapi::socket_path(&options.interface).map_err(DaemonError::Uapi)?;
    // The socket first: if another daemon owns the name, say so rather than "interface exists".
    let uapi = uapi::bind_listener(&socket_path).map_err(DaemonError::Uapi)?;
    let metrics = options
        .metrics
        .map(crate::metrics::server::bind)
        .transpose()
        .map_err(DaemonError::Metrics)?;
    let masquerade_target = options
        .masquerade
        .as_deref()
        .map(masquerade::Target::resolve)
        .transpose()
        .map_err(DaemonError::Masquerade)?;
    let queues = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tun = Tun::create(&options.interface, queues).map_err(DaemonError::Tun)?;
    let mtu = options.config.as_ref().map_or(tun::DEFAULT_MTU, |start| start.mtu);
    tun.set_mtu(mtu).map_err(|e| DaemonError::Io("set the interface MTU", e))?;
    // The file's port and mark from the first bind: a port in use fails here, before detaching.
    let (port, fwmark) =
        options.config.as_ref().map_or((0, 0), |start| (start.listen_port, start.fwmark));
    let sockets = Sockets::bind(port, fwmark).map_err(DaemonError::Udp)?;
    let mut ebpf = match &options.ebpf {
        None => None,
        Some(ebpf_options) => {
            let mtu = tun.mtu().unwrap_or(tun::DEFAULT_MTU);
            let sink = crate::dataplane::Dataplane::load(options.capacities)
                .and_then(|dp| ebpf::EbpfSink::new(dp, tun.ifindex(), mtu, ebpf_options))
                .map(|sink| {
                    sink.with_timer_scale(TimerScale { divisor: options.timer_divisor.max(1) })
                });
            match sink {
                Ok(sink) => Some(sink),
                // A kernel without what the programs need is not the operator's mistake: the
                // userspace path serves. Interfaces the operator named that cannot take the
                // programs are.
                Err(e @ DataplaneError::Unsupported(_)) => {
                    tracing::warn!("eBPF data plane unavailable ({e}): using the userspace path");
                    None
                }
                Err(e) if !ebpf_options.underlays.is_empty() || !ebpf_options.lan.is_empty() => {
                    return Err(DaemonError::Dataplane(e));
                }
                Err(e) => {
                    tracing::warn!("eBPF data plane unavailable ({e}): using the userspace path");
                    None
                }
            }
        }
    };
    let masquerade = masquerade_target
        .map(|target| masquerade::Masquerade::start(target, &options.interface, ebpf.as_mut()))
        .transpose()
        .map_err(DaemonError::Masquerade)?;
    if let Some(start) = &options.config {
        config_file::configure_link(&options.interface, start).map_err(DaemonError::Config)?;
    }
    Ok(Setup { tun, sockets, uapi, ebpf, entry, metrics, masquerade })
}

/// Forks; the parent exits at once (without running destructors: the child owns everything
/// now), the child carries on in a new session.
fn detach(keep_output: bool) -> Result<(), DaemonError> {
    // SAFETY: no other thread exists yet (nothing has spawned one), so fork is safe.
    match unsafe { libc::fork() } {
        -1 => Err(DaemonError::Io("fork", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain syscalls on our own process and descriptors.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    if !keep_output {
                        libc::dup2(null, 1);
                        libc::dup2(null, 2);
                    }
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            Ok(())
        }
        // SAFETY: the parent leaves without touching anything the child now owns.
        _ => unsafe { libc::_exit(0) },
    }
}

pub fn run(options: Options) -> Result<(), DaemonError> {
    let setup = acquire(&options)?;
    if !options.foreground {
        detach(options.keep_output)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("gatewayd-rt")
        .build()
        .map_err(|e| DaemonError::Io("start the runtime", e))?;
    runtime.block_on(serve(options, setup))
}

async fn serve(options: Options, setup: Setup) -> Result<(), DaemonError> {
    let Setup { tun, sockets, uapi, ebpf, entry, metrics, masquerade } = setup;
    let now = Instant::now();
    let mut device_options = DeviceOptions {
        timer_scale: TimerScale { divisor: options.timer_divisor.max(1) },
        entry_peers: options.entry_peers.iter().copied().collect::<HashSet<_>>(),
        ..Default::default()
    };
    if let Some(sink) = &ebpf {
        device_options.session_memory = Arc::new(sink.session_pool());
    }
    let mut device = Device::new(now, SystemTime::now(), Box::new(OsRng), device_options);
    device.set_listen_port(sockets.port);
    device.set_mtu(tun.mtu().unwrap_or(tun::DEFAULT_MTU) as usize);
    let ifindex = tun.ifindex();
    let programs = ebpf.as_ref().map(|sink| sink.program_reports()).unwrap_or_default();
    let data_path = if ebpf.is_some() { "eBPF" } else { "userspace" };
    let sink = ebpf.map(|s| Box::new(s) as Box<dyn core::EventSink>);
    let shared = Shared::new(Core { device, sink }, sockets, tun);
    // The sink learns the listen port and MTU from the device's first events.
    shared.step(|_| {});

    let (queue, _handshakes) =
        io::start_handshake_worker(&shared).map_err(|e| DaemonError::Io("start a thread", e))?;
    let queue = Arc::new(queue);
    let start_udp = {
        let queue = Arc::clone(&queue);
        move |shared: &Arc<Shared>, sockets: &Arc<Sockets>| {
            if let Err(e) = io::start_udp_readers(shared, sockets, &queue) {
                tracing::error!("cannot start UDP receivers: {e}");
            }
        }
    };
    start_udp(&shared, &shared.sockets());
    io::start_tun_readers(&shared).map_err(|e| DaemonError::Io("start a thread", e))?;
    io::start_timer(&shared).map_err(|e| DaemonError::Io("start a thread", e))?;

    let mut control =
        Control { shared: Arc::clone(&shared), rebind: Box::new(start_udp), config_file: None };
    if let Some(start) = &options.config {
        // Through the same path as `wg set`, before anything is served or announced ready;
        // written back from then on (not now: the file is what was just applied).
        uapi::UapiHandler::set(&control, start.update.clone()).map_err(|e| {
            DaemonError::Config(format!("{}: cannot apply it: {e}", start.path.display()))
        })?;
        control.config_file = Some(start.path.clone());
    }
    let control = Arc::new(control);
    let server = UapiServer::from_listener(uapi.0, uapi.1, Arc::clone(&control))
        .map_err(DaemonError::Uapi)?;

    // The forwards: published as loaded, then changed over the control socket.
    let entry = Arc::new(entry);
    let host: Arc<dyn forwards::EntryHost> = Arc::new(DaemonHost(Arc::clone(&shared)));
    entry.publish(&*host);

    // The metrics endpoint, started again on another listener when a reload moves it.
    let start_metrics: reload::MetricsStarter = {
        let (shared, entry) = (Arc::clone(&shared), Arc::clone(&entry));
        let interface = options.interface.clone();
        Box::new(move |listener| {
            let metrics = crate::metrics::DaemonMetrics {
                shared: Arc::clone(&shared),
                entry: Arc::clone(&entry),
                interface: interface.clone(),
                programs: programs.clone(),
            };
            tokio::spawn(crate::metrics::serve(listener, metrics)).abort_handle()
        })
    };
    let metrics_task = metrics.map(&start_metrics);
    let names: config_file::PeerNames = Arc::new(std::sync::RwLock::new(
        options.config.as_ref().map(|start| start.peer_names.clone()).unwrap_or_default(),
    ));
    let reloader = options.config.clone().map(|start| {
        let targets = reload::Targets {
            interface: options.interface.clone(),
            control: Arc::clone(&control),
            entry: Arc::clone(&entry),
            host: Arc::clone(&host),
            start_metrics,
            names: Arc::clone(&names),
        };
        Arc::new(reload::Reloader::new(targets, start, metrics_task))
    });
    // The interface's network role, resumed before anything is announced ready: a member's
    // saved peers and addresses are back without a controller.
    let network = Arc::new(network::NetworkService::start(
        &options.interface,
        Arc::clone(&control),
        options.state_directory.clone(),
    ));
    let (control_listener, _control_guard) = forward_socket::bind(&options.interface)
        .map_err(|e| DaemonError::Io("bind the forwards' control socket", e))?;
    tokio::spawn(forward_socket::serve(
        control_listener,
        Arc::clone(&entry),
        Arc::clone(&host),
        reloader.clone(),
        Arc::clone(&network),
    ));
    if let Some(reloader) = reloader {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| DaemonError::Io("install the SIGHUP handler", e))?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let reloader = Arc::clone(&reloader);
                let result = tokio::task::spawn_blocking(move || reloader.reload())
                    .await
                    .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
                reload::log(&result, "SIGHUP");
            }
        });
    }
    // The proxy follows the same table; dropped (listening sockets closed) when serve ends.
    let _proxy = steering::start_proxy(&shared, entry.subscribe(), Arc::clone(entry.traffic()));

    let (status_listener, _status_guard) = status::bind(&options.interface)
        .map_err(|e| DaemonError::Io("bind the status socket", e))?;
    tokio::spawn(status::serve(
        status_listener,
        Arc::clone(&shared),
        Arc::clone(&entry),
        options.interface.clone(),
        names,
    ));

    let link_shared = Arc::clone(&shared);
    let name = options.interface.clone();
    let watcher = tokio::spawn(async move {
        let apply = |shared: &Shared, event: link::LinkEvent| match event {
            link::LinkEvent::Changed { up, mtu } => shared.step(|c| {
                if let Some(mtu) = mtu {
                    c.device.set_mtu(mtu as usize);
                }
                c.device.set_up(Instant::now(), up);
            }),
            link::LinkEvent::Deleted => shared.stop(),
            link::LinkEvent::OtherLinkChanged(index) => shared.step(|c| {
                if let Some(sink) = c.sink.as_mut() {
                    sink.link_changed(index);
                }
                // Perhaps an underlay's MTU.
                let peers: Vec<_> = c.device.peer_ids().collect();
                path_mtu::refresh(c, peers);
            }),
            link::LinkEvent::AddressesChanged => {
                if let Ok((v4, v6)) = link::addresses(&name) {
                    shared.step(|c| c.device.set_icmp_sources(v4, v6));
                }
            }
        };
        let initial = Arc::clone(&link_shared);
        let name2 = name.clone();
        // Read the state once the subscription is in place, so no change is missed.
        let init = async move {
            tokio::task::yield_now().await;
            if let Ok(up) = link::is_up(&name2) {
                initial.step(|c| c.device.set_up(Instant::now(), up));
            }
            if let Ok((v4, v6)) = link::addresses(&name2) {
                initial.step(|c| c.device.set_icmp_sources(v4, v6));
            }
        };
        let watch = link::watch(ifindex, |e| apply(&link_shared, e));
        let (result, ()) = tokio::join!(watch, init);
        if let Err(e) = result {
            tracing::warn!("interface watcher failed: {e}");
        }
    });

    tracing::info!(interface = %options.interface, "gatewayd running");
    // Ready: the interface exists, its UAPI, status and control sockets accept connections and
    // every worker runs. A `Type=notify` unit's ExecStartPost (peers, addresses) starts now.
    let notifier = notify::Notifier::from_environment();
    notifier.ready(&format!("serving {} ({data_path} data path)", options.interface));
    let stop_polling = {
        let shared = Arc::clone(&shared);
        async move {
            while !shared.stopping.load(Ordering::Acquire) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Io("install the SIGTERM handler", e))?;
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = stop_polling => {}
        }
    };
    if server.serve(shutdown).await == ServeEnd::SocketRemoved {
        tracing::info!("UAPI socket removed: shutting down");
    }
    notifier.stopping(&format!("removing {}", options.interface));
    watcher.abort();
    shared.stop();
    shared.sockets().shutdown();
    // Detach every program before the process goes (the TUN and sockets go with it).
    drop(shared.lock().sink.take());
    // Then the kernel's NAT table and the sysctls `--masquerade` changed.
    drop(masquerade);
    Ok(())
}

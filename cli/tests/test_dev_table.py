"""The demo's live table: redrawn in place on a terminal, appended elsewhere."""

from __future__ import annotations

import re

from gossamer_cli.dev import promtext, table

ESCAPE = re.compile(r"\x1b\[[0-9]*[A-Za-z]")


def emulate(screen_text: str) -> list[str]:
    """A minimal terminal: the lines on screen after ``screen_text`` (CSI F, K and J)."""
    lines = [""]
    row = col = 0
    pos = 0
    while pos < len(screen_text):
        match = ESCAPE.match(screen_text, pos)
        if match:
            code = match.group()
            if code.endswith("F"):
                row, col = max(0, row - int(code[2:-1] or "1")), 0
            elif code == "\x1b[K":
                lines[row] = lines[row][:col]
            elif code == "\x1b[J":
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
            else:
                raise AssertionError(f"unexpected escape {code!r}")
            pos = match.end()
            continue
        char = screen_text[pos]
        if char == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row]
            lines[row] = line[:col] + char + line[col + 1 :]
            col += 1
        pos += 1
    return [line for line in lines if line]


def test_a_terminal_shows_only_the_latest_frame_below_what_was_printed_before() -> None:
    screen = table.Screen(tty=True)
    out = "logs: /var/lib/x.log\n"
    out += screen.frame("title 1\nHEADER\nweb 1.0\nslow 2.0")
    out += screen.frame("title 2\nHEADER\nweb 3.0")
    assert emulate(out) == ["logs: /var/lib/x.log", "title 2", "HEADER", "web 3.0"]
    # No whole-screen clear: what was printed before the table stays.
    assert "\x1b[2J" not in out
    assert "\x1b[H" not in out


def test_each_redraw_moves_up_over_exactly_the_last_frames_lines() -> None:
    screen = table.Screen(tty=True)
    first = screen.frame("a\nb\nc")
    assert first == "a\x1b[K\nb\x1b[K\nc\x1b[K\n\x1b[J"
    second = screen.frame("d\ne")
    assert second.startswith("\x1b[3F")
    assert screen.frame("f").startswith("\x1b[2F")


def test_a_pipe_gets_plain_tables_appended() -> None:
    screen = table.Screen(tty=False)
    out = screen.frame("t1\nrow") + screen.frame("t2\nrow")
    assert out == "t1\nrow\n\nt2\nrow\n\n"
    assert "\x1b" not in out


SCRAPED = """
request_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="10.0.0.5:8080",tls="true",client_id="traffic.demo"} 90
request_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="10.0.0.5:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 10
request_total{direction="inbound",authority="10.0.0.5:4191",target_addr="10.0.0.5:4191",tls="no_identity",no_tls_reason="no_tls_from_remote"} 400
request_total{direction="outbound",authority="10.0.0.9:4191",target_addr="10.0.0.9:4191",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 50
request_total{direction="outbound",authority="[fd00::9]:4190",target_addr="[fd00::9]:4190",tls="no_identity"} 5
request_total{direction="outbound",authority="slow.demo.svc.cluster.local:9090",target_addr="10.0.0.7:9090",tls="true"} 30
"""  # noqa: E501


def test_the_mtls_share_counts_application_traffic_only() -> None:
    counters = table.counters_by_direction(promtext.parse(SCRAPED))
    inbound = table.row("web", 1, counters["inbound"], 10.0, "inbound")
    # 90 of the 100 application requests were mTLS; the 400 admin-port requests are left out
    # of the share (not of the request rate: the proxy did serve them).
    assert inbound.mtls_share == 0.9
    assert inbound.rps == 50.0
    outbound = table.row("web", 1, counters["outbound"], 10.0, "outbound")
    assert outbound.mtls_share == 1.0


def test_only_mesh_ports_mark_traffic_as_the_meshs_own() -> None:
    (app,) = promtext.parse('request_total{authority="web:8080",target_addr="10.0.0.5:8080"} 1')
    (admin,) = promtext.parse('request_total{authority="x",target_addr="10.0.0.5:4191"} 1')
    (scrape,) = promtext.parse('request_total{authority="10.0.0.5:4191",target_addr=""} 1')
    (bare,) = promtext.parse('request_total{authority="web",target_addr="[fd00::1]:80"} 1')
    assert table.is_application_traffic(app)
    assert not table.is_application_traffic(admin)
    assert not table.is_application_traffic(scrape)
    assert table.is_application_traffic(bare)


def test_a_window_without_application_requests_has_no_mtls_share() -> None:
    only_admin = 'request_total{direction="inbound",target_addr="10.0.0.5:4191",tls="true"} 9'
    counters = table.counters_by_direction(promtext.parse(only_admin))["inbound"]
    assert table.row("web", 1, counters, 1.0, "inbound").mtls_share is None

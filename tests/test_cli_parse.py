"""The CLI's argument parsing: options and positionals mix in any order; anything else is a usage error."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from testbed.apps.cli import build_parser, main


@pytest.mark.parametrize("argv", [
    ["pods", "del", "--name", "c", "pod-1", "pod-2"],
    ["pods", "del", "pod-1", "--name", "c", "pod-2"],
    ["pods", "del", "pod-1", "pod-2", "--name", "c"],
])
def test_pod_names_may_come_before_between_and_after_options(argv):
    args = build_parser().parse_args(argv)
    assert (args.command, args.action, args.pods, args.name) == ("pods", "del", ["pod-1", "pod-2"], "c")


def test_options_after_a_positional_keep_their_meaning():
    args = build_parser().parse_args(["simulate", "grow-and-shrink", "--json", "--pretty"])
    assert (args.file, args.json, args.pretty) == ("grow-and-shrink", True, True)
    args = build_parser().parse_args(["topology", "--png", "t.svg", "default", "--json"])
    assert (args.file, args.png, args.json) == ("default", "t.svg", True)


@pytest.mark.parametrize("argv, expected", [
    (["simulate", "--json", "--", "-odd.yaml"], {"file": "-odd.yaml", "json": True}),
    (["simulate", "--", "--json"], {"file": "--json", "json": False}),
    (["pods", "del", "--name", "c", "--", "-p1", "p2", "--p3"], {"pods": ["-p1", "p2", "--p3"], "name": "c"}),
    (["pods", "del", "a", "--name", "c", "b", "--", "-p1"], {"pods": ["a", "b", "-p1"], "name": "c"}),
    (["exec", "pod-1", "--", "ls", "-la"], {"pod": "pod-1", "argv": ["ls", "-la"]}),
])
def test_words_after_a_double_dash_are_positionals_even_when_they_start_with_a_dash(argv, expected):
    """Python 3.11's intermixed parsing drops `--` between its passes: `simulate -- -odd.yaml` said the
    file was missing."""
    args = vars(build_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize("argv, said", [
    (["pods", "del", "--bogus", "pod-1"], "unrecognized arguments: --bogus"),
    (["simulate", "a.yaml", "b.yaml"], "unrecognized arguments: b.yaml"),
    (["pods", "remove", "pod-1"], "invalid choice: 'remove'"),
    (["teleport"], "invalid choice: 'teleport'"),
    (["bench", "sim", "--nodes", "many"], "argument --nodes: 'many' is not a whole number"),
    # past 4,300 digits Python's int() refuses in its own words, and argparse quoted the value whole
    (["bench", "sim", "--nodes", "9" * 5000], "argument --nodes: '99999"),
    (["tune", "--workers", "9" * 5000], "a number of 5,000 digits is far too large"),
    (["chaos", "--seed", "x" * 5000], "argument --seed: 'xxxx"),
    # int() takes these as 80; an option does not (a server on port 80 was started from ' 80')
    (["vpc", "serve", "--port", " 80"], "argument --port: ' 80' is not a whole number (digits 0-9 only)"),
    (["vpc", "serve", "--port", "8_0"], "argument --port: '8_0' is not a whole number"),
    (["bench", "sim", "--nodes", "\u0668\u0660"], "is not a whole number"),
    (["bench", "sim", "--nodes", "1" * 41 + " "], "is not a whole number"),
    (["bench", "--", "-x"], "invalid choice: '-x' (choose from"),  # a word after `--`, named as typed
])
def test_a_wrong_word_is_a_usage_error_with_exit_2(argv, said, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err) < 1000


LONG = "/tmp/" + "x" * 5000
AGENT_ARGV = ["--node", "node-1", "--state", "s", "--listen", "l", "--subnet", "subnet-a", "--max-enis", "3",
              "--ips-per-eni", "10"]
ESCAPES = "\x1b[2J\x1b[31mok\nenilab: all checks passed\x07"
CHOICES = "(choose from 'simulate', 'run', 'vpc', 'up', 'exec', 'pods', 'cni', 'claims', 'down', 'clean', " \
          "'status', 'trace', 'topology', 'audit', 'chaos', 'bench', 'tune', 'demo')"


@pytest.mark.parametrize("parse, argv, said", [
    ("enilab", [LONG], "invalid choice: '/tmp/xxx"),
    ("enilab", ["audit", LONG], "unrecognized arguments: '/tmp/xxx"),
    ("enilab", ["bench", "sim", *["zz"] * 5000], "unrecognized arguments: zz, zz, zz, zz, zz and 4995 more"),
    ("enilab", ["simulate", "--states", LONG, "grow-and-shrink"], "argument --states: invalid choice: '/tmp/xxx"),
    ("enilab", ["pods", LONG], "invalid choice: '/tmp/xxx"),  # a sub-parser's sub-parser
    # many short words in one argument: the value is cut, not the list of what is allowed
    ("enilab", [" ".join(["simulate"] * 40)], "'simulate simulate simulate"),
    ("enilab", [LONG], CHOICES),
    ("enilab", ["bench", "sim " + " ".join(c * 78 for c in "xyzw")], "(choose from 'sim', 'bringup', 'cni')"),
    # what does not print is escaped, on one line: no fake line, no screen cleared
    ("enilab", ["audit", ESCAPES], "unrecognized arguments: \\x1b[2J\\x1b[31mok\\nenilab: all checks passed\\x07"),
    ("enilab", [ESCAPES], "invalid choice: '\\x1b[2J"),
    # argparse's time grows with the square of the options given: 20,000 took 18 s
    ("enilab", ["audit", *["-x"] * 20_000], "20,000 arguments look like options; give at most 1,000"),
    ("enilab", ["vpc", "serve", "--port", "9" * 1000], "9999...: a number of 1,000 digits is far too large"),
    ("agent", [*AGENT_ARGV, LONG], "unrecognized arguments: '/tmp/xxx"),
    ("agent", [*AGENT_ARGV, ESCAPES], "unrecognized arguments: \\x1b[2J"),
    ("controller", ["default", "--name", "a", "--backend", LONG], "invalid choice: '/tmp/xxx"),
])
def test_argparse_shows_what_was_typed_escaped_and_shortened(parse, argv, said, capsys):
    """argparse quotes a bad choice whole and prints unknown arguments as typed: 5,000 characters (or
    5,000 words) made a message as long, and escape sequences reached the terminal. Each value is cut to
    80 characters, the list of arguments to five, what does not print is escaped, and the message ends
    with what is allowed."""
    from eni_core import agent
    from testbed.apps import controller

    run = {"enilab": main, "agent": agent._parse, "controller": controller.main}[parse]
    with pytest.raises(SystemExit) as exited:
        run(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    message = captured.err.splitlines()[-1]
    assert said in message and len(message) <= 420, message
    assert max(map(len, message.split())) <= 82
    assert captured.err.isprintable() or set(captured.err) - set(captured.err.strip()) <= {"\n"}
    assert not any(c in captured.err for c in "\x1b\x07")
    if parse == "controller":  # `enilab up` waits for the controller's answer on stdout
        assert json.loads(captured.out)["error"].startswith("argument --backend: invalid choice: '/tmp/xxx")


def test_a_file_name_that_does_not_print_is_shown_escaped(capsys):
    assert main(["simulate", "a\nb\x1b[31m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("enilab: error: 'a\\nb\\x1b[31m': cannot read it") and "\x1b" not in err
    assert err.count("\n") == 1


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_a_missing_action_names_only_what_is_missing(capsys):
    with pytest.raises(SystemExit):
        main(["pods"])
    assert "the following arguments are required: action\n" in capsys.readouterr().err


def test_a_step_that_lists_names_shows_them_in_the_simulator_s_report(capsys):
    """A list in a step is text in the report, not rich markup that swallows it."""
    assert main(["simulate", "static-ip-retention"]) == 0
    out = capsys.readouterr().out
    assert "delete_pods names=[default/web-0, pod-1]" in out


@pytest.mark.parametrize("iterations", ["0", "-1", "100001", "99999999999"])
def test_chaos_refuses_a_count_of_iterations_it_cannot_run_before_it_asks_for_root(iterations, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["chaos", "--iterations", iterations]) == 2
    err = capsys.readouterr().err
    assert f"--iterations {iterations}: give 1 to 100,000" in err and "needs root" not in err


@pytest.mark.parametrize("action", ["add", "del"])
@pytest.mark.parametrize("count", ["0", "-1", "-99999999"])
def test_a_count_of_no_pods_gets_one_message_whatever_the_number_and_before_any_cluster(action, count, capsys):
    assert main(["pods", action, "--count", count, "--name", "no-such-cluster"]) == 2
    err = capsys.readouterr().err
    assert err == f"enilab: error: --count {count}: give 1 to 10,000 pods\n", err


@pytest.mark.parametrize("argv, said", [
    (["simulate", ""], "give a scenario: a file's path, or a built-in's name"),
    (["up", "default", "--name", ""], "--name: '' is not a DNS label"),
    (["vpc", "serve", "default", "--secret-id", "", "--secret-key", ""], "give non-empty values"),
    (["vpc", "serve", "default", "--secret-id", " ", "--secret-key", "k"], "give non-empty values"),
])
def test_an_empty_value_is_refused_not_taken_for_the_default(argv, said, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # refused before root is asked for
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "needs root" not in err, err


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_pretty_without_json_is_refused_not_ignored(command, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # refused before root is asked for
    assert main([command, "grow-and-shrink", "--pretty"]) == 2
    captured = capsys.readouterr()
    assert "enilab: error: --pretty indents the JSON; add --json" in captured.err and captured.out == ""
    assert "needs root" not in captured.err


HUGE = "9" * 400


@pytest.mark.parametrize("argv, said", [
    (["bench", "sim", "--nodes", HUGE], "--nodes: '99999"),
    (["bench", "sim", "--pods", HUGE], "--pods: '99999"),
    (["tune", "--workload", "steady", "--latency", HUGE], "--latency '99999"),
])
def test_a_400_digit_number_gets_a_short_message(argv, said, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    try:
        code = main(argv)
    except SystemExit as exited:  # refused by argparse, with the usage
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert said in err and len(err) < 300, err


@pytest.mark.parametrize("value", [" 3", "3_0", "\u0663", "three"])
def test_the_node_agent_takes_whole_numbers_by_the_same_rule(value, capsys):
    """enilab-agent's counts follow the rule of enilab's options (`eni_core.names.whole_number`)."""
    from eni_core import agent

    argv = ["--node", "node-1", "--state", "s", "--listen", "l", "--subnet", "subnet-a",
            "--max-enis", value, "--ips-per-eni", "10"]
    with pytest.raises(SystemExit) as exited:
        agent._parse(argv)
    assert exited.value.code == 2
    assert f"argument --max-enis: {value!r} is not a whole number (digits 0-9 only)" in capsys.readouterr().err
    assert agent._parse([*argv[:-3], "3", *argv[-2:]]).max_enis == 3


F_SETPIPE_SZ = 1031  # linux/fcntl.h


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly_with_exit_0(extra):
    """`enilab simulate ... | head`: the tables go through rich, which on a closed pipe exited 1 as if enilab
    had failed; the JSON went through enilab's own handler, which exits 0. Both now end as the JSON did."""
    read, write = os.pipe()
    fcntl.fcntl(read, F_SETPIPE_SZ, 4096)  # less than the output (13 KB and more): the writer meets the close
    proc = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "simulate", "grow-and-shrink", *extra],
                            stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    proc.stdout = os.fdopen(read, "rb")
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""

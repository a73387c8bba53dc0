"""The table in an S3 bucket (`--table s3://...`, recsys/index/store.py TableLocation, recsys/index/object_store.py)
against a real S3 server on 127.0.0.1 (moto's, started by this module): the same vectors as a table on disk, a rerun
that does nothing, `similar` answering through a home's own snapshot (also on a second machine's home that embedded
nothing), one writer per table (the lease in the bucket: a second writer refused, an expired lease taken over, two
concurrent embeds never both embedding a track), the Ray engine writing there, clear lines for a missing bucket or
an unreachable endpoint, and the credentials never written to a file nor the user's home touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
boto3 = pytest.importorskip("boto3")

from recsys.app.embed import embed_library  # noqa: E402
from recsys.app.settings import command_settings  # noqa: E402
from recsys.cli import main  # noqa: E402
from recsys.index.object_store import LeaseHeld, LeaseLost, TableLease  # noqa: E402
from recsys.index.store import TableLocation, TrackRow, TrackStore  # noqa: E402

BUCKET = "recsys-shared"
KEY_ID, SECRET = "AKIARECSYSTEST", "recsys-test-secret-3f9c1e"  # the secret must never land in a file


@pytest.fixture(scope="module")
def s3_server():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, _no_user_config):
    """The server's endpoint; credentials in AWS_* only, the endpoint in the settings (as a user sets them)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("RECSYS_STORE__STORAGE_OPTIONS", f"endpoint={s3_server},region=us-east-1,allow_http=true")
    return s3_server


def _options(endpoint: str) -> dict[str, str]:
    return {"endpoint": endpoint, "region": "us-east-1", "allow_http": "true"}


def _settings(lib, home: Path, table: str = ""):
    return command_settings(None, str(home), db=str(lib.db), store={"table": table},
                            embed={"encoder": "dsp", "device": "cpu", "workers": 1})


def _cli(home: Path, *args: str, table: str | None = None):
    return CliRunner().invoke(main, ["--home", str(home), *(["--table", table] if table else []), *args],
                              catch_exceptions=False)


def _vectors(settings) -> dict[str, np.ndarray]:
    table, vectors = TrackStore.of(settings, writable=False).read_all()
    return dict(zip(table.column("key").to_pylist(), vectors, strict=True))


def _objects(endpoint: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def _files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()]


def test_a_table_in_a_bucket_holds_the_local_vectors_reruns_do_nothing_and_similar_answers(small_library, s3,
                                                                                          tmp_path):
    uri = f"s3://{BUCKET}/same"
    local = _settings(small_library, tmp_path / "local")
    assert embed_library(local).embedded == 12

    writer = tmp_path / "writer-home"
    first = _cli(writer, "embed", "--db", str(small_library.db), "--encoder", "dsp", "--workers", "1", table=uri)
    assert first.exit_code == 0, first.output
    assert "embedded 12" in first.output
    assert any(k.startswith("same/tracks.lance/") for k in _objects(s3, "same/")), "the table is in the bucket"
    assert not (writer / "tracks.lance").exists(), "nothing of the table in the home"
    assert not any(k.endswith("recsys.lease") for k in _objects(s3, "same/")), "the lease is given back"

    shared, on_disk = _vectors(_settings(small_library, writer, uri)), _vectors(local)
    assert shared.keys() == on_disk.keys() and len(shared) == 12
    for key, vector in on_disk.items():
        np.testing.assert_allclose(shared[key], vector, rtol=0, atol=1e-6)  # the same code on the same samples

    version = TrackStore.of(_settings(small_library, writer, uri), writable=False).version
    again = _cli(writer, "embed", "--encoder", "dsp", table=uri)
    assert again.exit_code == 0 and "embedded 0, up to date 12" in again.output, again.output
    assert TrackStore.of(_settings(small_library, writer, uri), writable=False).version == version

    title = small_library.songs[0].title
    near = _cli(writer, "similar", title, "-k", "3")  # the home's snapshot: no --table needed to query
    assert near.exit_code == 0 and near.output.count("\n") >= 4, near.output

    # another machine's home that embedded nothing: its embed finds the work done and builds its own snapshot
    query_host = tmp_path / "query-home"
    seen = _cli(query_host, "embed", "--db", str(small_library.db), "--encoder", "dsp", table=uri)
    assert seen.exit_code == 0 and "embedded 0, up to date 12" in seen.output, seen.output
    assert TrackStore.of(_settings(small_library, writer, uri), writable=False).version == version
    there = _cli(query_host, "similar", title, "-k", "3")
    assert there.exit_code == 0 and there.output.splitlines()[1:] == near.output.splitlines()[1:], there.output

    status = _cli(query_host, "status", "--db", str(small_library.db), "--json", table=uri)
    assert status.exit_code == 0 and json.loads(status.output)["table"] == uri

    Path(small_library.songs[1].path).unlink()  # prune and repair write the table too, under its lease
    pruned = _cli(query_host, "prune", table=uri)
    assert pruned.exit_code == 0 and "removed 1 track(s)" in pruned.output, pruned.output
    repaired = _cli(writer, "repair", table=uri)
    assert repaired.exit_code == 0 and "table: whole (11 rows)" in repaired.output, repaired.output
    assert len(_vectors(_settings(small_library, writer, uri))) == 11
    assert SECRET not in first.output + again.output + seen.output + status.output + pruned.output
    assert _files_holding(tmp_path, SECRET) == [], "the secret was written to a file"
    assert not (tmp_path / "user-home").exists() or not list((tmp_path / "user-home").rglob("*")), \
        "something was written to the user's home"


def test_one_writer_per_table_a_killed_writers_lease_expires(s3):
    uri, options = f"s3://{BUCKET}/leased", _options(s3)
    first = TableLease(uri, options, "recsys embed")
    with first:
        with pytest.raises(LeaseHeld, match=rf"another `recsys embed` \(pid {os.getpid()} on .*\) is writing the "
                                            rf"table {uri}: wait for it to finish"):
            TableLease(uri, options, "recsys prune").acquire()
        first.check()  # still ours
    with TableLease(uri, options, "recsys prune"):  # given back: the next one takes it
        pass
    assert _objects(s3, "leased/") == []

    # a writer killed mid-run leaves its lease; it expires by the server's clock and is taken over
    killed = TableLease(uri, options, "recsys embed", seconds=1)
    killed.acquire()
    killed._stop.set()  # noqa: SLF001 - what a kill -9 leaves: a lease nobody renews
    from recsys.index import object_store

    object_store._held.pop(uri)  # noqa: SLF001 - it belonged to another process
    time.sleep(2.1)  # Last-Modified has whole seconds
    with TableLease(uri, options, "recsys embed"):
        with pytest.raises(LeaseLost, match="lost its lease"):
            killed.check()  # the old holder, had it only been stuck, commits nothing more


def test_a_lease_left_by_a_dead_process_of_this_machine_is_taken_over_at_once(s3):
    """A rerun after a kill -9 on the same host need not wait out the lease: its holder's process is gone here. A
    holder of another machine (or namespace), or one still running, is waited for as before."""
    import json
    import subprocess
    import sys

    from recsys.home.lock import machine_identity

    uri, options = f"s3://{BUCKET}/dead", _options(s3)
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)  # that process has ended

    def leave(pid: int, machine: str) -> None:
        client.put_object(Bucket=BUCKET, Key="dead/recsys.lease", Body=json.dumps(
            {"host": "elsewhere", "pid": pid, "machine": machine, "command": "recsys embed",
             "started": "2026-12-06T08:00:00+00:00", "seconds": 120}).encode())

    assert machine_identity(), "this test needs /proc (Linux)"
    leave(dead_pid, "another-boot/1")  # another machine's pid means nothing here: wait for the expiry
    with pytest.raises(LeaseHeld, match="expire in"):
        TableLease(uri, options, "recsys embed").acquire()
    leave(os.getppid(), machine_identity())  # alive on this machine: wait
    with pytest.raises(LeaseHeld, match="expire in"):
        TableLease(uri, options, "recsys embed").acquire()
    leave(dead_pid, machine_identity())  # gone, on this machine: taken over at once
    with TableLease(uri, options, "recsys embed") as lease:
        lease.check()
    assert _objects(s3, "dead/") == []


def test_a_second_embed_into_a_leased_table_is_refused_with_a_line(small_library, s3, tmp_path):
    uri = f"s3://{BUCKET}/busy"
    with TableLease(uri, _options(s3), "recsys embed"):
        refused = _cli(tmp_path / "other-home", "embed", "--db", str(small_library.db), "--encoder", "dsp", table=uri)
    assert refused.exit_code == 1
    assert refused.output.startswith("recsys: error: another `recsys embed` (pid ") and refused.output.count("\n") == 1
    assert f"is writing the table {uri}: wait for it to finish" in refused.output
    assert _objects(s3, "busy/") == [], "nothing was written"


def test_two_concurrent_embeds_into_one_table_never_both_embed_a_track(small_library, s3, tmp_path):
    uri = f"s3://{BUCKET}/race"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    runs = [subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(tmp_path / f"host{i}"), "--table",
                              uri, "embed", "--db", str(small_library.db), "--encoder", "dsp", "--workers", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]
    outputs = [(run.wait(timeout=180), run.stdout.read()) for run in runs]
    embedded = 0
    for code, output in outputs:
        if code == 0:
            embedded += int(output.split("embedded ", 1)[1].split(",", 1)[0])
        else:  # started while the other held the table
            assert "is writing the table " + uri in output, output
    assert embedded == 12, outputs  # every track once: never both, never neither
    settings = _settings(small_library, tmp_path / "host0", uri)
    assert len(_vectors(settings)) == 12


def test_tag_names_travel_with_the_table_to_another_machines_home(s3, tmp_path):
    location = TableLocation(f"s3://{BUCKET}/tagged", _options(s3))
    row = TrackRow(key="/m/a.flac", path="/m/a.flac", start_s=0.0, content_id="c", size=1, mtime_ns=1,
                   duration_s=1.0, artist="", album="", title="", genre="", year=None, track_number=None,
                   encoder_id="e", vector=np.full(4, 0.5, np.float32), tags=np.array([0.1, 0.9], np.float32))
    with location.lease("recsys embed"):
        TrackStore.open(tmp_path / "writer", location=location).upsert([row], ["calm", "loud"])
    reader = TrackStore.open(tmp_path / "query-host", writable=False, location=location)
    assert reader.tag_names == ["calm", "loud"]  # no tags.json in that home: the column's own metadata
    assert not (tmp_path / "query-host").exists()


def test_the_ray_engine_embeds_into_the_bucket(small_library, s3, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'recsys[ray]')")
    settings = _settings(small_library, tmp_path / "ray-home", f"s3://{BUCKET}/ray")
    report = embed_library(settings, engine="ray")
    assert report.embedded == 12 and report.failed == 0, report
    assert len(_vectors(settings)) == 12
    assert embed_library(settings, engine="ray").embedded == 0  # the rerun does nothing (no Ray started)
    assert _files_holding(tmp_path, SECRET) == []
    assert not (tmp_path / "user-home").exists() or not list((tmp_path / "user-home").rglob("*"))


def test_a_missing_bucket_an_unreachable_endpoint_and_a_key_in_the_settings_are_one_line(small_library, s3,
                                                                                        tmp_path, monkeypatch):
    home, db = tmp_path / "home", str(small_library.db)
    missing = _cli(home, "embed", "--db", db, "--encoder", "dsp", table="s3://no-such-bucket/x")
    assert missing.exit_code == 1 and missing.output.count("\n") == 1
    assert f"the bucket no-such-bucket of the table s3://no-such-bucket/x does not exist at {s3}: create it" \
        in missing.output

    monkeypatch.setenv("RECSYS_STORE__STORAGE_OPTIONS", "endpoint=http://127.0.0.1:9,region=us-east-1")
    down = _cli(home, "status", "--db", db, table=f"s3://{BUCKET}/x")
    assert down.exit_code == 1 and down.output.count("\n") == 1
    assert f"cannot reach the object store at http://127.0.0.1:9 for the table s3://{BUCKET}/x" in down.output

    monkeypatch.setenv("RECSYS_STORE__STORAGE_OPTIONS", f"endpoint={s3},aws_secret_access_key={SECRET}")
    keyed = _cli(home, "status", "--db", db, table=f"s3://{BUCKET}/x")
    assert keyed.exit_code == 1 and keyed.output.count("\n") == 1
    assert "store.storage_options holds a credential (aws_secret_access_key; " in keyed.output
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in keyed.output and SECRET not in keyed.output

    misplaced = CliRunner().invoke(main, ["--home", str(home), "embed", "--table", f"s3://{BUCKET}/x"])
    assert misplaced.exit_code == 2
    assert "--table is an option of recsys itself: give it before the command, e.g. recsys --table ... embed" \
        in misplaced.output

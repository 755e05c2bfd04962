defmodule Tether.ConfigTest do
  # Restarts the :tether application with other settings: not async.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog
  import Tether.OsHelpers

  @moduletag timeout: 120_000

  # Restarts :tether with `env` set (and erlexec's `erlexec_env`), runs `fun`, restores.
  defp with_config(env, erlexec_env \\ [], fun) do
    saved = Application.get_all_env(:tether)
    :ok = Application.stop(:tether)
    Enum.each(env, fn {k, v} -> Application.put_env(:tether, k, v) end)
    Enum.each(erlexec_env, fn {k, v} -> Application.put_env(:erlexec, k, v) end)

    try do
      fun.()
    after
      Application.stop(:tether)
      Enum.each(env, fn {k, _} -> Application.delete_env(:tether, k) end)
      Enum.each(erlexec_env, fn {k, _} -> Application.delete_env(:erlexec, k) end)
      Enum.each(saved, fn {k, v} -> Application.put_env(:tether, k, v) end)
      {:ok, _} = Application.ensure_all_started(:tether)
    end
  end

  defp start!, do: {:ok, _} = Application.ensure_all_started(:tether)

  test "max_children: past it run returns {:error, :max_children} and spawns nothing" do
    with_config([max_children: 3], fn ->
      start!()
      children = for _ <- 1..3, do: elem(Tether.run(["sleep", "100"]), 2)
      assert Tether.run(["sleep", "100"]) == {:error, :max_children}
      assert Tether.which_processes() == Enum.sort(children)
      assert Tether.info().spawn_errors >= 1
    end)
  end

  test "kill_timeout is the default of every run" do
    with_config([kill_timeout: 1], fn ->
      start!()
      {:ok, _, os_pid} = Tether.run([script("ignore_term.sh")], [:stdout, :monitor])
      assert first_line(os_pid) == "ready"
      started = System.monotonic_time(:millisecond)
      :ok = Tether.stop(os_pid)
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 3000
      assert (System.monotonic_time(:millisecond) - started) in 900..2500
    end)
  end

  test "debug traces spawns, signals, stops and exits with os_pid metadata; nothing when off" do
    with_config([debug: :info], fn ->
      start!()

      log =
        capture_log([metadata: [:os_pid]], fn ->
          {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
          ref = Process.monitor(pid)
          Tether.kill(os_pid, :sigcont)
          Tether.stop(os_pid)
          assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
          # The exit trace is written by the Tether.Process just before it ends.
          assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5000
          send(self(), {:traced, os_pid})
        end)

      assert_received {:traced, os_pid}

      for fragment <- [
            "spawned #{os_pid}",
            "signal 18 to #{os_pid}",
            "stopping #{os_pid}",
            "#{os_pid} exited"
          ] do
        assert log =~ fragment
      end

      assert log =~ "os_pid=#{os_pid}"
    end)

    log = capture_log(fn -> Tether.run(["true"], [:sync]) end)
    refute log =~ "Tether spawned"
  end

  test "pipe_size and read_chunk" do
    with_config([pipe_size: 65_536, read_chunk: 4096], fn ->
      start!()
      python = "import fcntl; print(fcntl.fcntl(1, 1032))"
      assert {:ok, [stdout: size]} = Tether.run(["python3", "-c", python], [:sync, :stdout])
      assert IO.iodata_to_binary(size) == "65536\n"
      {:ok, _, os_pid} = Tether.run(["head", "-c", "200000", "/dev/zero"], [:stdout, :monitor])
      sizes = chunk_sizes(os_pid, [])
      assert Enum.sum(sizes) == 200_000
      assert Enum.max(sizes) <= 4096
    end)
  end

  test "busy_poll_us: polling without sleeping keeps I/O and timers working" do
    for busy_poll <- [0, 10_000] do
      with_config([busy_poll_us: busy_poll], fn ->
        start!()
        {:ok, _, cat} = Tether.run(["cat"], [:stdin, :stdout, :monitor])

        for i <- 1..50 do
          :ok = Tether.send(cat, "#{i}\n")
          expected = "#{i}\n"
          assert_receive {:stdout, ^cat, ^expected}, 5000
        end

        # A stop step's deadline still fires while the loop polls.
        {:ok, _, stubborn} =
          Tether.run([script("ignore_term.sh")], [:stdout, :monitor, kill_timeout: 0.2])

        assert first_line(stubborn) == "ready"
        :ok = Tether.stop(stubborn)
        assert_receive {:DOWN, ^stubborn, _, _, {:signal, :sigkill, false}}, 5000
        Tether.kill(cat, :sigkill)
      end)
    end
  end

  test "bad values fail the application start, naming the key and the accepted values" do
    for {key, value, expected} <- [
          {:max_children, -1, "a positive integer"},
          {:kill_timeout, :soon, "seconds"},
          {:debug, :loud, "Logger level"},
          {:watchdog_path, "/nonexistent/watchdog", "existing file"},
          {:read_chunk, 10, "bytes from 1024"},
          {:busy_poll_us, -1, "microseconds from 0"}
        ] do
      with_config([{key, value}], fn ->
        assert {:error, reason} = Application.start(:tether)
        message = inspect(reason)
        assert message =~ inspect(key) and message =~ expected, message
      end)
    end
  end

  test "config :erlexec keys that map are honoured; the rest are ignored with a warning" do
    with_config([], [max_children: 2, verbose: true], fn ->
      log = capture_log(fn -> start!() end)
      assert log =~ "ignores these config :erlexec keys: [:verbose]"
      {:ok, _, a} = Tether.run(["sleep", "100"])
      {:ok, _, b} = Tether.run(["sleep", "100"])
      assert Tether.run(["sleep", "100"]) == {:error, :max_children}
      Enum.each([a, b], &Tether.kill(&1, :sigkill))
    end)
  end

  test "watchdog_path overrides the helper program's location" do
    copy =
      Path.join(System.tmp_dir!(), "tether-watchdog-copy-#{System.unique_integer([:positive])}")

    File.cp!(Path.join(:code.priv_dir(:tether), "native/tether_watchdog"), copy)
    File.chmod!(copy, 0o755)

    # Loading an application sets its env from the .app file: load first, then configure.
    code = """
    :ok = Application.load(:tether)
    Application.put_env(:tether, :watchdog_path, #{inspect(copy)})
    {:ok, _} = Application.ensure_all_started(:tether)
    IO.puts(File.read!("/proc/\#{Tether.Native.watchdog_os_pid()}/cmdline"))
    """

    {output, 0} = run_beam(code)
    assert output =~ copy
    File.rm!(copy)
  end

  test "info/1 reports the resource usage after exit; info/0 counts" do
    before = Tether.info()
    burn = "import os\nwhile os.times().user < 0.25: pass"
    {:ok, _, os_pid} = Tether.run(["python3", "-c", burn], [:monitor])
    live = Tether.info(os_pid)
    assert live.status == :running and live.command == ["python3", "-c", burn]
    assert live.owner == self() and is_integer(live.started_at)
    assert abs(DateTime.diff(live.started_at_wall, DateTime.utc_now(), :second)) <= 5
    assert_receive {:DOWN, ^os_pid, _, _, :normal}, 10_000
    info = Tether.info(os_pid)
    assert info.status == {:exited, :normal}
    assert info.started_at_wall == live.started_at_wall
    assert info.user_time_us >= 150_000, inspect(info)
    assert info.max_rss > 0
    after_run = Tether.info()
    assert after_run.spawned >= before.spawned + 1
    assert after_run.exited >= before.exited + 1
    assert is_integer(after_run.live)
    assert Tether.info(999_999_999) == {:error, :no_process}
  end

  defp chunk_sizes(os_pid, sizes) do
    receive do
      {:stdout, ^os_pid, data} -> chunk_sizes(os_pid, [byte_size(data) | sizes])
      {:DOWN, ^os_pid, _, _, :normal} -> sizes
    after
      5000 -> flunk("stalled")
    end
  end
end

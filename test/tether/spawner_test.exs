defmodule Tether.SpawnerTest do
  # Kills the spawner, changes the VM's working directory and oom_score_adj: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  # The spawner is on by default (config :tether, spawner: false turns it off); configured
  # explicitly here, whatever the configuration.
  setup_all do
    configure(Path.join(Tether.Native.native_dir(), "tether_spawner"))
    on_exit(fn -> configure(Tether.Config.spawner_path(Tether.Native.native_dir())) end)
  end

  defp configure(spawner) do
    config = &Tether.Config.get/1

    :ok =
      Tether.Native.configure(
        config.(:max_children),
        config.(:read_chunk),
        config.(:busy_poll_us),
        nil,
        spawner
      )
  end

  defp spawner do
    # It starts with the first spawn after a (re)configuration or a death.
    {:ok, _, os_pid} = Tether.run(["true"], [:monitor])
    assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
    Tether.Native.spawner_os_pid() || flunk("no spawner runs")
  end

  defp stat(os_pid) do
    [_, rest] = "/proc/#{os_pid}/stat" |> File.read!() |> String.split(") ", parts: 2)
    String.split(rest, " ")
  end

  defp ppid(os_pid), do: os_pid |> stat() |> Enum.at(1) |> String.to_integer()

  test "children are cloned by the spawner, yet they are the VM's children" do
    spawner = spawner()
    vm = String.to_integer(System.pid())
    assert ppid(spawner) == vm
    {:ok, _, os_pid} = Tether.run(["sleep", "10"], [:monitor])
    assert ppid(os_pid) == vm
    :ok = Tether.stop(os_pid)
    assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigterm, false}}, 5000
  end

  test "the spawner's fd table stays small while children live, and none of its fds leak" do
    spawner = spawner()
    children = for _ <- 1..50, do: Tether.run(["sleep", "30"], [:stdin, :stdout, :stderr])
    assert length(File.ls!("/proc/self/fd")) > 150
    assert length(File.ls!("/proc/#{spawner}/fd")) <= 4
    {:ok, _, os_pid} = Tether.run(["ls", "/proc/self/fd"], [:stdout, :monitor])
    assert {"0\n1\n2\n3\n", "", :normal} = collect(os_pid)
    for {:ok, _, child} <- children, do: Tether.kill(child, :sigkill)
  end

  test "a child starts in the VM's current working directory" do
    spawner = spawner()
    here = File.cwd!()
    tmp = Path.join(System.tmp_dir!(), "tether-spawner-cwd-#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)

    try do
      File.cd!(tmp)
      # Shared (CLONE_FS), not copied once: the spawner follows the VM.
      assert File.read_link!("/proc/#{spawner}/cwd") == tmp
      {:ok, _, os_pid} = Tether.run(["pwd"], [:stdout, :monitor])
      assert {out, "", :normal} = collect(os_pid)
      assert String.trim(out) == tmp
      {:ok, _, os_pid} = Tether.run(["pwd"], [:stdout, :monitor, cd: "/"])
      assert {"/\n", "", :normal} = collect(os_pid)
    after
      File.cd!(here)
      File.rm_rf!(tmp)
    end
  end

  test "a child gets the VM's environment and oom_score_adj at request time, not the spawner's" do
    spawner()
    # (OTP keeps System.put_env to itself: the process environment is what children get.)
    {:ok, _, os_pid} = Tether.run(["printenv", "HOME"], [:stdout, :monitor])
    assert {home, "", :normal} = collect(os_pid)
    assert String.trim(home) == System.get_env("HOME")

    original = File.read!("/proc/self/oom_score_adj")

    try do
      File.write!("/proc/self/oom_score_adj", "321")
      {:ok, _, os_pid} = Tether.run(["cat", "/proc/self/oom_score_adj"], [:stdout, :monitor])
      assert {"321\n", "", :normal} = collect(os_pid)
    after
      File.write!("/proc/self/oom_score_adj", original)
    end
  end

  test "exec errors still come back from run/2" do
    spawner()
    assert {:error, :enoent} = Tether.run(["/nonexistent/program"])

    file =
      Path.join(System.tmp_dir!(), "tether-not-executable-#{System.unique_integer([:positive])}")

    File.write!(file, "#!/bin/sh\n")
    File.chmod!(file, 0o644)
    assert {:error, :eacces} = Tether.run([file])
    File.rm!(file)
    assert {:error, :enoent} = Tether.run(["true"], cd: "/nonexistent")
  end

  @tag skip: not (File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m) && "needs root"
  test "capabilities reach the child, as another user or as root" do
    spawner()
    {:ok, pid, os_pid} = Tether.run(["sleep", "30"], user: "nobody", capabilities: [:kill])
    assert %{effective: 32, permitted: 32, ambient: 32} = capabilities(os_pid)
    Tether.stop(pid)
    {:ok, pid, os_pid} = Tether.run(["sleep", "30"], capabilities: [:net_bind_service])

    assert %{effective: 1024, permitted: 1024, ambient: 1024, bounding: 1024} =
             capabilities(os_pid)

    Tether.stop(pid)
    assert Tether.Native.spawner_os_pid() != nil
  end

  test "max_rss is the program's own, not the VM's nor the spawner's" do
    spawner()
    {:ok, _, os_pid} = Tether.run(["/bin/true"], [:monitor])
    assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
    max_rss = Tether.info(os_pid).max_rss
    # What `time -v` measures for the same program, in KiB (a fork of the small `time`).
    {out, 0} = System.cmd("/usr/bin/time", ["-f", "%M", "/bin/true"], stderr_to_stdout: true)
    own = String.to_integer(String.trim(out)) * 1024
    # Loose bounds for a test (bench/ holds the 10% goal): the VM's 60+ MB or the spawner's
    # unshed 1.3 MB would both fail it.
    assert max_rss < own * 1.25, "max_rss #{max_rss} against time's #{own}"
    assert max_rss > own * 0.5
  end

  test "a killed spawner is replaced; live children are unaffected" do
    old = spawner()
    {:ok, _, live} = Tether.run(["sleep", "30"], [:monitor, :stdout])
    System.cmd("kill", ["-KILL", "#{old}"])
    assert wait_gone([old]) == []
    assert alive?(live)
    new = spawner()
    assert new != old
    assert ppid(live) == String.to_integer(System.pid())
    :ok = Tether.stop(live)
    assert_receive {:DOWN, ^live, _, _, {:signal, :sigterm, false}}, 5000
  end

  test "a stopped spawner (SIGSTOP) is replaced: spawns and other children's events go on" do
    old = spawner()
    {:ok, _, live} = Tether.run(["sh", "-c", "read x; echo got $x"], [:stdin, :stdout, :monitor])
    System.cmd("kill", ["-STOP", "#{old}"])
    # Before the fix the reactor waited on the stopped spawner forever: this run never
    # returned, and nothing else (output, exits) was delivered either.
    task =
      Task.async(fn ->
        {:ok, _, os_pid} = Tether.run(["echo", "hi"], [:stdout, :monitor])
        collect(os_pid)
      end)

    assert {:ok, {"hi\n", "", :normal}} = Task.yield(task, 10_000) || Task.shutdown(task)
    assert wait_gone([old]) == []
    :ok = Tether.send(live, "x\n")
    assert {"got x\n", "", :normal} = collect(live)
    assert spawner() != old
  end

  test "spawns racing spawner deaths all start exactly once" do
    spawner()
    parent = self()

    killer =
      spawn_link(fn ->
        for _ <- 1..20 do
          case Tether.Native.spawner_os_pid() do
            nil -> :ok
            pid -> System.cmd("kill", ["-KILL", "#{pid}"], stderr_to_stdout: true)
          end

          Process.sleep(5)
        end

        send(parent, :killer_done)
      end)

    # Each run is collected by the task that owns it: it must start once, say "ran" once and
    # end normally, whatever spawner it met.
    results =
      1..300
      |> Task.async_stream(
        fn _ ->
          case Tether.run(["sh", "-c", "echo ran"], [:stdout, :monitor]) do
            {:ok, _, os_pid} -> collect(os_pid)
            error -> error
          end
        end,
        max_concurrency: 8,
        timeout: 60_000
      )
      |> Enum.map(fn {:ok, result} -> result end)

    assert_receive :killer_done, 10_000
    refute Process.alive?(killer)
    assert Enum.frequencies(results) == %{{"ran\n", "", :normal} => 300}
  end

  test "with spawner: false (or no program) children are cloned by the VM itself" do
    spawner()
    path = Path.join(Tether.Native.native_dir(), "tether_spawner")

    try do
      configure(nil)
      {:ok, _, os_pid} = Tether.run(["sleep", "10"], [:monitor])
      assert Tether.Native.spawner_os_pid() == nil
      assert ppid(os_pid) == String.to_integer(System.pid())
      Tether.kill(os_pid, :sigkill)
      assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
    after
      configure(path)
    end

    assert is_integer(spawner())
  end
end

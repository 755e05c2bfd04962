defmodule Tether.ContainmentTest do
  # The escape matrix of README's guarantees table: each way a process started by a child can
  # try to outlive it, under each death, with cgroups on and forced off. Every escapee prints
  # its pid; the test checks /proc (a zombie counts as gone).
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  @moduletag timeout: 180_000

  @escapes escapes()

  # Without cgroups these leave the child's process group, and nothing else can find them.
  @escape_without_cgroups [:setsid, :double_fork_setsid, :bash_set_m, :perl_setpgrp]

  setup_all do
    {:ok, path} = Tether.Native.cgroups()
    on_exit(fn -> Tether.Native.configure_cgroups(:auto, nil) end)
    %{cgroup_root: path}
  end

  setup do
    with_cgroups(:on)
    :ok
  end

  defp with_cgroups(:on), do: {:ok, _} = Tether.Native.configure_cgroups(:auto, nil)
  defp with_cgroups(:off), do: {:ok, nil} = Tether.Native.configure_cgroups(:off, nil)

  # Starts `snippet` (then exits, or stays with `then_sleep`), returns {os_pid, escapee pid}.
  defp start_escape(snippet, then_sleep, options \\ []) do
    command =
      Tether.OsHelpers.escape_command(snippet) <>
        if(then_sleep, do: "; exec sleep 1000", else: "")

    {:ok, _, os_pid} = Tether.run(command, [:stdout, :monitor, kill_timeout: 1] ++ options)
    {os_pid, String.to_integer(first_line(os_pid))}
  end

  # Once the others are gone, only the known gap survives: nothing with cgroups, the escapes
  # from the group without. Whatever is left is killed after the test.
  defp assert_survivors(results, mode) do
    on_exit(fn -> kill_leftovers(Keyword.values(results)) end)
    expected = if mode == :on, do: [], else: @escape_without_cgroups
    assert Enum.sort(survivors(results)) == Enum.sort(expected)
  end

  # The names of the escapees still alive once the others are gone (3 s at most).
  defp survivors(escapees) do
    left = wait_gone(Keyword.values(escapees))
    for {name, pid} <- escapees, pid in left, do: name
  end

  defp kill_leftovers(pids) do
    Enum.each(pids, &System.cmd("kill", ["-9", "#{&1}"], stderr_to_stdout: true))
  end

  for mode <- [:on, :off] do
    describe "cgroups #{mode}" do
      setup do
        with_cgroups(unquote(mode))
        :ok
      end

      test "the leader exits on its own: what it started is stopped after its :DOWN" do
        results =
          for {name, snippet} <- @escapes do
            {os_pid, escapee} = start_escape(snippet, false)
            assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
            {name, escapee}
          end

        assert_survivors(results, unquote(mode))
      end

      test "stop/1 stops the child and everything it started" do
        results =
          for {name, snippet} <- @escapes do
            {os_pid, escapee} = start_escape(snippet, true)
            assert Tether.stop(os_pid) == :ok
            assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigterm, false}}, 5000
            {name, escapee}
          end

        assert_survivors(results, unquote(mode))
      end

      test "owner death stops the child and everything it started" do
        test = self()

        owner =
          spawn(fn ->
            results =
              for {name, snippet} <- @escapes do
                {_os_pid, escapee} = start_escape(snippet, true)
                {name, escapee}
              end

            send(test, {:results, results})
            receive do: (:exit -> :ok)
          end)

        assert_receive {:results, results}, 10_000
        send(owner, :exit)
        assert_survivors(results, unquote(mode))
      end
    end
  end

  test "{:background_jobs, :keep} leaves them running while the owner lives, visibly" do
    test = self()

    owner =
      spawn(fn ->
        {os_pid, escapee} = start_escape(@escapes[:background_job], false, background_jobs: :keep)
        assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
        send(test, {:started, os_pid, escapee})
        receive do: (:exit -> :ok)
      end)

    assert_receive {:started, os_pid, escapee}, 10_000
    assert alive?(escapee)
    assert Tether.info(os_pid).background_jobs == :running
    assert Tether.info().background >= 1
    assert Tether.which_processes() |> Enum.member?(os_pid) == false
    send(owner, :exit)
    assert wait_gone(escapee) == []
    assert wait_until(fn -> Tether.info(os_pid).background_jobs == :none end)
  end

  test "{:background_jobs, {:keep, pid}} keeps them while that process lives, not the owner" do
    keeper = spawn(fn -> receive do: (:exit -> :ok) end)
    {os_pid, escapee} = start_escape(@escapes[:setsid], false, background_jobs: {:keep, keeper})
    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    assert Tether.info(os_pid).background_jobs == :running
    send(keeper, :exit)
    assert wait_gone(escapee) == []
    assert wait_until(fn -> Tether.info(os_pid).background_jobs == :none end)

    assert_raise ArgumentError, ~r/background_jobs/, fn ->
      Tether.run(["true"], background_jobs: {:keep, :not_a_pid})
    end
  end

  test "{:background_jobs, {:keep, pid}} with a pid of an earlier incarnation of this node is refused" do
    # Same node name, another creation (a pid stored before a restart): node(pid) == node(),
    # but it is not a local pid. It was `{:error, :badarg}` from the NIF, naming nothing.
    binary = :erlang.term_to_binary(self())
    size = byte_size(binary) - 4
    <<head::binary-size(size), creation::32>> = binary
    stale = :erlang.binary_to_term(head <> <<creation + 1::32>>)
    assert node(stale) == node()
    before = Tether.which_processes()

    assert_raise ArgumentError, ~r/background_jobs/, fn ->
      Tether.run(["true"], background_jobs: {:keep, stale})
    end

    assert Tether.which_processes() -- before == []
  end

  test "stop/1 of an exited child stops the background jobs it keeps" do
    {os_pid, escapee} = start_escape(@escapes[:setsid], false, background_jobs: :keep)
    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    assert alive?(escapee)
    assert Tether.stop(os_pid) == :ok
    assert wait_gone(escapee) == []
    assert wait_until(fn -> Tether.stop(os_pid) == {:error, :no_process} end)
  end

  test "a sibling that joined the group is not the leader's leftover" do
    {:ok, _, leader} =
      Tether.run("sleep 1000 >/dev/null & echo $!; read x; exit 0", [:stdin, :stdout, :monitor])

    job = String.to_integer(first_line(leader))
    {:ok, _, sibling} = Tether.run(["sleep", "1000"], [:monitor, group: leader])
    # The leader exits on its own: its background job is stopped, the sibling lives on.
    :ok = Tether.send(leader, :eof)
    assert_receive {:DOWN, ^leader, :process, _, :normal}, 5000
    assert wait_gone(job) == []
    assert alive?(sibling)
    assert Tether.stop(sibling) == :ok
    assert_receive {:DOWN, ^sibling, :process, _, {:signal, :sigterm, false}}, 5000
  end

  test "a cgroup_root that is not cgroup v2, or not absolute, is refused" do
    assert {:error, reason} = Tether.Native.configure_cgroups(:required, "/tmp")
    assert reason =~ "not a cgroup2 directory"

    if File.dir?("/sys/fs/cgroup/freezer") do
      assert {:error, _} = Tether.Native.configure_cgroups(:required, "/sys/fs/cgroup/freezer")
    end

    assert {:ok, nil} = Tether.Native.configure_cgroups(:auto, "relative/dir")
  after
    with_cgroups(:on)
  end

  test "a group changer is stopped like anyone else: stop/1 ends in a :DOWN" do
    # The child itself moves into the VM's process group.
    command = [
      "perl",
      "-e",
      ~S"$| = 1; setpgrp(0, getpgrp(getppid())); print qq(moved\n); sleep 1000"
    ]

    {:ok, _, os_pid} = Tether.run(command, [:stdout, :monitor, kill_timeout: 1])
    assert first_line(os_pid) == "moved"
    assert Tether.kill(os_pid, 0) == :ok
    assert Tether.stop(os_pid) == :ok
    assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigterm, false}}, 5000
  end

  test "a child's cgroup is its own, and it is removed once empty", %{cgroup_root: root} do
    command = "grep ^0:: /proc/self/cgroup; exec sleep 1000"
    {:ok, _, os_pid} = Tether.run(command, [:stdout, :monitor])
    "0::" <> path = first_line(os_pid)
    own = Path.join(root, Path.basename(path))
    assert String.ends_with?(root, Path.dirname(path))
    # Only the child (the exited grep may be listed for a moment).
    assert wait_until(fn -> File.read!(Path.join(own, "cgroup.procs")) == "#{os_pid}\n" end)
    Tether.stop(os_pid)
    assert_receive {:DOWN, ^os_pid, :process, _, _}, 5000
    assert wait_until(fn -> not File.exists?(own) end)
  end

  test "cgroup limits are refused where their controller is not enabled", %{cgroup_root: root} do
    controllers = File.read!(Path.join(root, "cgroup.subtree_control"))

    unless controllers =~ "pids" do
      assert Tether.run(["true"], cgroup_limits: [pids_max: 10]) ==
               {:error, :cgroup_limits_unavailable}
    end

    assert_raise ArgumentError, ~r/cgroup_limits/, fn ->
      Tether.run(["true"], cgroup_limits: [pids_max: 0])
    end

    with_cgroups(:off)

    assert Tether.run(["true"], cgroup_limits: [memory_max: 1_073_741_824]) ==
             {:error, :cgroup_limits_unavailable}
  after
    with_cgroups(:on)
  end

  # ── VM death ───────────────────────────────────────────────────────────────────────────

  defp vm_scenario(cgroups, action) do
    commands = inspect(for {_, snippet} <- @escapes, do: Tether.OsHelpers.escape_command(snippet))

    """
    Application.put_env(:tether, :cgroups, #{cgroups})
    {:ok, _} = Application.ensure_all_started(:tether)
    pids = for command <- #{commands} do
      {:ok, _, os_pid} = Tether.run(command <> "; exec sleep 1000", [:stdout])
      receive do {:stdout, ^os_pid, line} -> line |> String.split() |> hd() end
    end
    IO.puts("ESCAPEES " <> Enum.join(pids, " "))
    #{action}
    IO.puts("READY")
    Process.sleep(:infinity)
    """
  end

  # The scenario VM is detached from this one, so only its own defences can clean up.
  defp run_vm(code) do
    ebin = Path.join(:code.lib_dir(:tether), "ebin")

    {:ok, _, vm} =
      Tether.run(["elixir", "-pa", ebin, "-e", code], [:stdout, :monitor, detach: true])

    on_exit(fn -> System.cmd("kill", ["-9", "#{vm}"], stderr_to_stdout: true) end)

    {vm, read_lines(vm, %{})}
  end

  defp read_lines(vm, acc) do
    receive do
      {:stdout, ^vm, data} ->
        acc =
          data
          |> String.split("\n", trim: true)
          |> Enum.reduce(acc, fn line, acc ->
            [key | values] = String.split(line)
            Map.put(acc, key, Enum.map(values, &String.to_integer/1))
          end)

        if Map.has_key?(acc, "READY"), do: acc, else: read_lines(vm, acc)
    after
      30_000 -> flunk("the scenario VM did not report: #{inspect(acc)}")
    end
  end

  for {cgroups, survivors} <- [{true, []}, {false, @escape_without_cgroups}] do
    test "VM SIGKILL (cgroups #{cgroups}): what every child started dies with the VM" do
      {vm, report} = run_vm(vm_scenario(unquote(cgroups), ""))
      escapees = Enum.zip(Keyword.keys(@escapes), report["ESCAPEES"])
      on_exit(fn -> kill_leftovers(report["ESCAPEES"]) end)
      System.cmd("kill", ["-9", "#{vm}"])
      assert_receive {:DOWN, ^vm, :process, _, {:signal, :sigkill, false}}, 5000
      left = survivors(escapees)
      assert Enum.sort(left) == Enum.sort(unquote(survivors))
    end
  end

  test "the watchdog killed eight times in a row, then the VM SIGKILLed: nothing is left" do
    action = """
    kill_watchdog = fn old ->
      System.cmd("kill", ["-9", Integer.to_string(old)])
      wait = fn wait -> case Tether.Native.watchdog_os_pid() do
        pid when pid in [nil, old] -> Process.sleep(1); wait.(wait)
        pid -> pid
      end end
      wait.(wait)
    end
    # Eight times in a row: a killed watchdog is never throttled.
    first = Tether.Native.watchdog_os_pid()
    last = Enum.reduce(1..8, first, fn _, old -> kill_watchdog.(old) end)
    IO.puts("WATCHDOGS \#{first} \#{last}")
    """

    {vm, report} = run_vm(vm_scenario(true, action))
    on_exit(fn -> kill_leftovers(report["ESCAPEES"]) end)
    [_, third] = report["WATCHDOGS"]
    System.cmd("kill", ["-9", "#{vm}"])
    assert_receive {:DOWN, ^vm, :process, _, {:signal, :sigkill, false}}, 5000
    assert wait_gone(report["ESCAPEES"] ++ [third]) == []
  end
end

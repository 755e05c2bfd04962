defmodule Tether.SafetyTest do
  # What Tether refuses to adopt, join or spawn (issue #14). Every refusal is made with
  # `detach: true` where a wrong acceptance could otherwise signal what the test did not start:
  # a regression then fails the assertion without stopping pid 1, the VM or its group.
  # Stops the application in one test and counts processes: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers
  import Bitwise

  defp vm, do: String.to_integer(System.pid())

  defp stat!(pid) do
    [_, rest] = Regex.run(~r/^\d+ \(.*\) (.*)$/s, File.read!("/proc/#{pid}/stat"))
    [_state, ppid, pgrp | _] = String.split(rest, " ")
    %{ppid: String.to_integer(ppid), pgrp: String.to_integer(pgrp)}
  end

  defp ancestors(pid) do
    case stat!(pid).ppid do
      0 -> []
      ppid -> [ppid | ancestors(ppid)]
    end
  end

  # A `sleep` this test starts outside Tether (`setsid -f`: it leads its own group and
  # session); found in /proc by its unique argument.
  defp port_sleep do
    marker = "100.#{System.unique_integer([:positive])}"
    {_, 0} = System.cmd("sh", ["-c", "setsid -f sleep #{marker} </dev/null >/dev/null 2>&1"])
    assert wait_until(fn -> find_by_cmdline(marker) != nil end)
    os_pid = find_by_cmdline(marker)
    on_exit(fn -> System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true) end)
    os_pid
  end

  defp find_by_cmdline(marker) do
    Enum.find_value(File.ls!("/proc"), fn entry ->
      with true <- entry =~ ~r/^\d+$/,
           {:ok, cmdline} <- File.read("/proc/#{entry}/cmdline"),
           # The sleep itself, once exec'd (setsid has run before), not the shell or setsid.
           true <- cmdline == "sleep\0#{marker}\0",
           do: String.to_integer(entry),
           else: (_ -> nil)
    end)
  end

  # A `sleep` in the group of a shell run by Tether: not Tether's, leads no group.
  defp grouped_sleep do
    {:ok, _, sh} = Tether.run(["sh", "-c", "sleep 100 & echo $!; wait"], [:stdout, :monitor])
    inner = sh |> first_line() |> String.to_integer()
    on_exit(fn -> Tether.kill(sh, :sigkill) end)
    {sh, inner}
  end

  describe "manage/2 refuses" do
    test "pid 1, with or without kill_group" do
      assert Tether.manage(1, detach: true, kill_group: true) == {:error, :init_process}
      assert Tether.manage(1, detach: true) == {:error, :init_process}
      refute 1 in Tether.which_processes()
    end

    test "the VM itself, its erl_child_setup and the watchdog" do
      assert Tether.manage(vm(), detach: true) == {:error, :vm_process}
      assert Tether.manage(vm(), detach: true, kill_group: true) == {:error, :vm_process}

      watchdog = Tether.Native.watchdog_os_pid()
      assert is_integer(watchdog)
      assert Tether.manage(watchdog, detach: true) == {:error, :vm_process}

      [child_setup] =
        for entry <- File.ls!("/proc"),
            entry =~ ~r/^\d+$/,
            File.read("/proc/#{entry}/comm") == {:ok, "erl_child_setup\n"},
            stat!(entry).ppid == vm(),
            do: String.to_integer(entry)

      assert Tether.manage(child_setup, detach: true) == {:error, :vm_process}
      assert Tether.which_processes() -- [vm(), watchdog, child_setup] == Tether.which_processes()
    end

    test "every ancestor of the VM, up to pid 1" do
      ancestors = ancestors(vm())
      assert List.last(ancestors) == 1

      for pid <- ancestors -- [1] do
        assert Tether.manage(pid, detach: true) == {:error, :vm_ancestor}, "ancestor #{pid}"
      end

      assert Enum.filter(Tether.which_processes(), &(&1 in ancestors)) == []
    end

    test "the id of one of the VM's threads (it would signal the whole VM)" do
      thread =
        File.ls!("/proc/self/task") |> Enum.map(&String.to_integer/1) |> Enum.find(&(&1 != vm()))

      assert Tether.manage(thread, detach: true) == {:error, :no_process}
    end

    test "an os_pid Tether already runs, which keeps its stdin and gets one :DOWN" do
      {:ok, pid, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor])

      assert Tether.manage(os_pid, [:monitor]) == {:error, :already_managed}
      assert Tether.pid(os_pid) == {:ok, pid}
      assert Tether.send(os_pid, "still mine\n") == :ok
      assert_receive {:stdout, ^os_pid, "still mine\n"}, 5000

      :ok = Tether.kill(os_pid, :sigkill)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigkill, false}}, 5000
      refute_received {:DOWN, ^os_pid, _, _, _}
    end

    test "kill_group: true for a process that leads no group; without it, it is adopted" do
      {_sh, inner} = grouped_sleep()
      assert stat!(inner).pgrp != inner

      assert Tether.manage(inner, kill_group: true, detach: true) == {:error, :not_group_leader}
      assert alive?(inner)
      refute inner in Tether.which_processes()

      {:ok, _pid, ^inner} = Tether.manage(inner, [:monitor, kill_group: false])
      :ok = Tether.kill(inner, :sigkill)
      assert_receive {:DOWN, ^inner, :process, _, :unknown}, 5000
      assert wait_gone([inner]) == []
    end

    test "a process that leads its own group is adopted with kill_group" do
      leader = port_sleep()
      assert stat!(leader).pgrp == leader

      {:ok, _pid, ^leader} = Tether.manage(leader, [:monitor, kill_group: true])
      :ok = Tether.kill(leader, :sigkill)
      assert_receive {:DOWN, ^leader, :process, _, :unknown}, 5000
    end

    test "bad arguments with ArgumentError naming the problem" do
      assert_raise ArgumentError, ~r/expects an os_pid/, fn -> Tether.manage(:x) end
      assert_raise ArgumentError, ~r/expects an os_pid/, fn -> Tether.manage("1", []) end
      assert_raise ArgumentError, ~r/proper list/, fn -> Tether.manage(12345, [:monitor | :x]) end
      assert_raise ArgumentError, ~r/must be a list/, fn -> Tether.manage(12345, :monitor) end
      assert_raise ArgumentError, ~r/not supported/, fn -> Tether.manage(12345, [{}]) end
      assert_raise ArgumentError, ~r/not supported/, fn -> Tether.manage(12345, [:stdout]) end
    end
  end

  describe "{:group, pgid}" do
    # Needs root (ns_last_pid, to hand the emptied group's number to a stranger at once) and a
    # cgroup per child (the leader's leftover is a setsid daemon, nobody's group member).
    @tag skip:
           (not (File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m) && "needs root") ||
             (not match?({:on, _}, Tether.info().cgroups) && "needs cgroups")
    test "a leader's drain never signals a stranger's group that reuses its emptied number" do
      # The leader leaves a SIGTERM-proof daemon in its cgroup: its drain runs the stop
      # sequence, SIGKILL after kill_timeout. The joiner, spared by that drain, leaves the group
      # (setsid): the group is then empty and its number free.
      marker = "daemon.#{System.unique_integer([:positive])}"

      daemon =
        "setsid sh -c 'trap \"\" TERM; while :; do sleep 1; done; : #{marker}' " <>
          "</dev/null >/dev/null 2>&1"

      {:ok, _, leader} =
        Tether.run(["sh", "-c", "#{daemon} & read x"], [
          :stdin,
          :monitor,
          group: 0,
          kill_timeout: 1
        ])

      {:ok, _, joiner} =
        Tether.run(["sh", "-c", "read x; exec setsid sleep 100"], [:stdin, group: leader])

      :ok = Tether.send(joiner, "go\n")
      assert wait_until(fn -> stat!(joiner).pgrp == joiner end)
      assert wait_until(fn -> cmdline_running?(marker) end)
      :ok = Tether.send(leader, "go\n")
      assert_receive {:DOWN, ^leader, _, _, :normal}, 5000

      # A process Tether did not start gets the leader's number, and so (erts makes a port's
      # program a session leader) leads a group of that number.
      stranger =
        Enum.find_value(1..200, fn _ ->
          File.write!("/proc/sys/kernel/ns_last_pid", "#{leader - 1}")
          port = Port.open({:spawn_executable, "/bin/sleep"}, [:exit_status, args: ["30"]])

          case Port.info(port, :os_pid) do
            {:os_pid, ^leader} ->
              port

            _ ->
              Port.close(port)
              nil
          end
        end) || flunk("could not reuse the number #{leader}")

      # (The port's program makes itself a session leader just after the fork.)
      assert wait_until(fn -> stat!(leader).pgrp == leader end)
      # The drain's SIGKILL step (after kill_timeout, 1 s) kills the daemon; in the same step,
      # before the fix, the members of "the group" by number: the stranger.
      assert wait_until(fn -> not cmdline_running?(marker) end, 10_000)
      # A SIGKILL sent is not yet a death: give a wrong one time to land.
      refute_receive {^stranger, {:exit_status, _}}, 1000
      Port.close(stranger)
      Tether.kill(joiner, :sigkill)
    end

    test "joins a group that a live child of Tether leads: stop reaches both" do
      {:ok, _, leader} = Tether.run(["sleep", "100"], [:monitor])
      {:ok, _, member} = Tether.run(["sleep", "100"], [:monitor, group: leader])
      assert stat!(member).pgrp == leader

      :ok = Tether.kill(leader, :sigkill)
      assert_receive {:DOWN, ^leader, :process, _, {:signal, :sigkill, false}}, 5000
      assert_receive {:DOWN, ^member, :process, _, {:signal, :sigkill, false}}, 5000
    end

    test "refuses the VM's own group and spawns nothing" do
      before = Tether.which_processes()
      vm_pgid = stat!(vm()).pgrp

      assert Tether.run(["true"], group: vm_pgid, detach: true) == {:error, :bad_group}
      assert Tether.run(["true"], [:sync, group: vm_pgid, detach: true]) == {:error, :bad_group}
      assert Tether.which_processes() -- before == []
    end

    test "refuses any group that no live child of Tether leads" do
      {:ok, _, dead} = Tether.run(["true"], [:monitor])
      assert_receive {:DOWN, ^dead, _, _, :normal}, 5000
      {:ok, _, inherited} = Tether.run(["sleep", "100"], [:monitor, group: :inherit])
      on_exit(fn -> Tether.kill(inherited, :sigkill) end)
      {sh, inner} = grouped_sleep()
      adopted = port_sleep()
      {:ok, _, ^adopted} = Tether.manage(adopted, kill_group: true)
      before = Tether.which_processes()

      # Not ours at all, ours but dead, ours but not a group leader (twice), adopted.
      for pgid <- [port_sleep(), dead, inherited, inner, adopted, 2_147_483_647] do
        assert Tether.run(["true"], group: pgid, detach: true) == {:error, :bad_group},
               "group #{pgid}"
      end

      assert Tether.which_processes() -- before == []
      # The shell leads the group of its background sleep: that one may be joined.
      assert {:ok, _, _} = Tether.run(["true"], group: sh)
    end

    test "a pgid that is not an integer above 1 raises ArgumentError" do
      for pgid <- [1, -5, "12", 1.5, 2 ** 31, nil] do
        assert_raise ArgumentError, ~r/:group option/, fn -> Tether.run(["true"], group: pgid) end
      end
    end
  end

  describe "a FIFO as a stdio path" do
    # The child opens its files between clone and execve, while the thread that cloned it
    # (the reactor's, or the spawner's that the reactor waits on) is suspended: an open that
    # waits for the FIFO's other end held every spawn, output and exit of the VM.
    setup do
      fifo = Path.join(System.tmp_dir!(), "tether-fifo-#{System.unique_integer([:positive])}")
      {_, 0} = System.cmd("mkfifo", [fifo])

      on_exit(fn ->
        # Should an open still wait, give it its other end so that the VM goes on.
        for mode <- [[:read, :write]], do: File.open(fifo, mode)
        File.rm(fifo)
      end)

      %{fifo: fifo}
    end

    defp within(fun) do
      task = Task.async(fun)
      Task.yield(task, 10_000) || Task.shutdown(task) || :hung
    end

    test "as output with no reader: {:error, :enxio}, at once", %{fifo: fifo} do
      assert {:ok, {:error, :enxio}} = within(fn -> Tether.run(["echo", "hi"], stdout: fifo) end)
    end

    test "as stdin with no writer: the program reads end of file", %{fifo: fifo} do
      assert {:ok, {"", "", :normal}} =
               within(fn ->
                 {:ok, _, os_pid} = Tether.run(["cat"], [:stdout, :monitor, stdin: fifo])
                 collect(os_pid)
               end)
    end
  end

  test "an output file's {:mode, m} with setuid, setgid or sticky bits is refused" do
    path = Path.join(System.tmp_dir!(), "tether-mode-#{System.unique_integer([:positive])}")
    before = Tether.which_processes()

    for mode <- [0o4755, 0o2755, 0o1777, 0o7777, 0o10000, -1] do
      assert_raise ArgumentError, ~r/:mode option/, fn ->
        Tether.run(["true"], stdout: {path, [{:mode, mode}]})
      end
    end

    refute File.exists?(path)
    assert Tether.which_processes() -- before == []

    {:ok, _, os_pid} = Tether.run(["true"], [:monitor, stdout: {path, [{:mode, 0o600}]}])
    assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
    assert (File.stat!(path).mode &&& 0o7777) == 0o600
    File.rm!(path)
  end

  describe "after Application.stop(:tether)" do
    setup do
      :ok = Application.stop(:tether)
      on_exit(fn -> {:ok, _} = Application.ensure_all_started(:tether) end)
    end

    # A command line no other process has: whether it was spawned is read from /proc.
    defp marker, do: "31.#{System.unique_integer([:positive])}"

    defp spawned?(marker), do: cmdline_running?(marker)

    test "every path that spawns returns or raises :not_started, and spawns nothing" do
      m = marker()
      assert Tether.run(["sleep", m]) == {:error, :not_started}
      assert Tether.run(["sleep", m], [:sync]) == {:error, :not_started}
      assert Tether.run("sleep #{m}", [:monitor, :stdout]) == {:error, :not_started}
      assert Tether.run_link(["sleep", m]) == {:error, :not_started}

      error = assert_raise ErlangError, fn -> Tether.cmd("sleep", [m]) end
      assert error.original == :not_started

      error =
        assert_raise Tether.Stream.ExitError, fn -> Enum.to_list(Tether.stream(["sleep", m])) end

      assert error.reason == :not_started

      refute spawned?(m)
      assert Tether.which_processes() == []
    end

    test "manage/2 and info/1 answer :not_started" do
      leader = port_sleep()
      assert Tether.manage(leader, [:monitor]) == {:error, :not_started}
      assert Tether.info(leader) == {:error, :not_started}
      assert alive?(leader)
      assert Tether.which_processes() == []
    end
  end
end

defmodule Tether.NoOrphansTest do
  # Every way a process or a VM can die, each in a separate BEAM started with Tether itself.
  # The BEAM starts the scenario children (a plain sleep, `sh -c 'sleep 1000 & sleep 1000'`, a
  # `{:group, 0}` child, a child that ignores SIGTERM) under an owner process, prints every
  # member of every child's process group, then acts; the test checks /proc.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  @moduletag timeout: 120_000

  @kill_timeout 1

  defp scenario(action) do
    escapes =
      inspect(for {_, snippet} <- escapes(), do: escape_command(snippet) <> "; exec sleep 1000")

    """
    {:ok, _} = Application.ensure_all_started(:tether)
    main = self()
    owner = spawn(fn ->
      specs = [
        {["sleep", "1000"], []},
        {"sleep 1000 & sleep 1000", []},
        {["sleep", "1000"], [group: 0]},
        {[#{inspect(script("ignore_term.sh"))}], [stdout: main]}
      ] ++ for command <- #{escapes}, do: {command, [stdout: main]}
      children = for {cmd, opts} <- specs, do: elem(Tether.run(cmd, [kill_timeout: #{@kill_timeout}] ++ opts), 2)
      send(main, {:children, children})
      receive do
        :exit -> :ok
        :crash -> raise "owner crashed"
      end
    end)
    children = receive do {:children, c} -> c end
    # The SIGTERM-ignoring child says ready; each escape prints its escapee's pid.
    collect = fn collect, ready, pids ->
      if ready and length(pids) == #{length(escapes())} do
        pids
      else
        receive do
          {:stdout, _, "ready\\n"} -> collect.(collect, true, pids)
          {:stdout, _, line} -> collect.(collect, ready, [String.trim(line) | pids])
        end
      end
    end
    escapees = collect.(collect, false, [])
    members = fn -> Enum.flat_map(children, &Tether.TestCluster.Manager.group_members/1) end
    wait = fn wait -> if length(members.()) >= 5, do: :ok, else: (Process.sleep(5); wait.(wait)) end
    wait.(wait)
    IO.puts("MEMBERS " <> Enum.join(members.(), " "))
    IO.puts("ESCAPEES " <> Enum.join(escapees, " "))
    IO.puts("WATCHDOG \#{Tether.Native.watchdog_os_pid()}")
    IO.puts("ACTION \#{System.os_time(:millisecond)}")
    #{action}
    IO.puts("DONE \#{System.os_time(:millisecond)}")
    Process.sleep(:infinity)
    """
  end

  # Starts the scenario BEAM; returns its os_pid and the parsed report once it has acted. It
  # is detached from this VM, so that only its own defences clean up after it.
  defp start_scenario(action, until \\ "ACTION") do
    ebin = Path.join(:code.lib_dir(:tether), "ebin")
    command = ["elixir", "-pa", ebin, "-e", scenario(action)]
    {:ok, _, vm} = Tether.run(command, [:stdout, :stderr, :monitor, detach: true])
    on_exit(fn -> System.cmd("kill", ["-9", "#{vm}"], stderr_to_stdout: true) end)

    {vm, read_report(vm, until, %{})}
  end

  defp read_report(vm, until, report) do
    receive do
      {:stdout, ^vm, data} ->
        report =
          data
          |> String.split("\n", trim: true)
          |> Enum.reduce(report, fn line, acc ->
            case String.split(line, " ") do
              [key | values] when key in ~w(MEMBERS ESCAPEES WATCHDOG ACTION DONE NEWWATCHDOG) ->
                Map.put(acc, key, Enum.map(values, &String.to_integer/1))

              _ ->
                acc
            end
          end)

        if Map.has_key?(report, until), do: report, else: read_report(vm, until, report)

      {:stderr, ^vm, data} ->
        IO.write(:stderr, data)
        read_report(vm, until, report)

      {:DOWN, ^vm, :process, _, reason} ->
        report
        |> Map.put("EXIT", reason)
        |> then(&if(until == "EXIT", do: &1, else: flunk("VM ended early: #{inspect(&1)}")))
    after
      60_000 -> flunk("scenario stalled: #{inspect(report)}")
    end
  end

  defp assert_all_gone(report, within_ms) do
    assert length(report["MEMBERS"]) >= 5
    assert length(report["ESCAPEES"]) == length(escapes())
    members = report["MEMBERS"] ++ report["ESCAPEES"]

    on_exit(fn ->
      Enum.each(members, &System.cmd("kill", ["-9", "#{&1}"], stderr_to_stdout: true))
    end)

    [action_at] = report["ACTION"]
    assert wait_gone(members, within_ms + 2000) == [], "survivors in /proc"
    gone_after = System.os_time(:millisecond) - action_at
    assert gone_after <= within_ms, "took #{gone_after} ms"
    # `TETHER_REPORT=1 mix test test/tether/no_orphans_test.exs` prints the clean-up times.
    if System.get_env("TETHER_REPORT"),
      do: IO.puts("\n  cleaned up #{length(members)} processes in #{gone_after} ms")

    gone_after
  end

  defp finish(vm) do
    Tether.kill(vm, :sigkill)
    receive do: ({:DOWN, ^vm, _, _, _} -> :ok), after: (5000 -> :ok)
  end

  test "owner exits normally: children and their groups are gone within kill_timeout + 1 s" do
    {vm, report} = start_scenario("send(owner, :exit)")
    assert_all_gone(report, @kill_timeout * 1000 + 1000)
    finish(vm)
  end

  test "owner crashes: children and their groups are gone within kill_timeout + 1 s" do
    {vm, report} = start_scenario("send(owner, :crash)")
    assert_all_gone(report, @kill_timeout * 1000 + 1000)
    finish(vm)
  end

  test "the Tether.Process handles are collected while the owner lives: children are stopped" do
    action = "for os_pid <- children, do: Process.exit(elem(Tether.pid(os_pid), 1), :kill)"
    {vm, report} = start_scenario(action)
    assert_all_gone(report, @kill_timeout * 1000 + 1000)
    finish(vm)
  end

  test "Application.stop(:tether): all gone, as soon as the last one exits" do
    {vm, report} = start_scenario(":ok = Application.stop(:tether)", "DONE")
    [action_at] = report["ACTION"]
    [done_at] = report["DONE"]
    # The SIGTERM-ignoring child needs its kill timeout; nothing else is waited for.
    assert done_at - action_at < @kill_timeout * 1000 + 1000
    assert_all_gone(report, @kill_timeout * 1000 + 1000)
    finish(vm)
  end

  test "System.stop: all gone, and the VM does not wait for nothing" do
    {_vm, report} = start_scenario("System.stop(0)", "EXIT")
    assert report["EXIT"] == :normal
    # kill_timeout for the SIGTERM-ignoring child, plus the BEAM's own ~1 s shutdown.
    assert_all_gone(report, @kill_timeout * 1000 + 3000)
  end

  test "System.halt: all gone at once" do
    {_vm, report} = start_scenario("System.halt(0)", "EXIT")
    assert report["EXIT"] == :normal
    assert_all_gone(report, 1000)
  end

  test "the VM is SIGKILLed: all gone within 1 s" do
    {vm, report} = start_scenario(":ok")
    Tether.kill(vm, :sigkill)
    assert_receive {:DOWN, ^vm, :process, _, {:signal, :sigkill, false}}, 5000
    assert_all_gone(report, 1000)
  end

  test "the watchdog is SIGKILLed: a new one takes over, children stay managed" do
    action = """
    [old] = [Tether.Native.watchdog_os_pid()]
    System.cmd("kill", ["-9", Integer.to_string(old)])
    wait_new = fn wait_new -> case Tether.Native.watchdog_os_pid() do
      new when new not in [nil, old] -> new
      _ -> Process.sleep(5); wait_new.(wait_new)
    end end
    IO.puts("NEWWATCHDOG \#{wait_new.(wait_new)}")
    IO.puts("STILL " <> inspect(Enum.map(children, &Tether.status/1)))
    """

    {vm, report} = start_scenario(action, "DONE")
    [old] = report["WATCHDOG"]
    [new] = report["NEWWATCHDOG"]
    assert new != old
    assert wait_gone([old]) == []
    # Children kept running, under management.
    assert Enum.all?(report["MEMBERS"] ++ report["ESCAPEES"], &alive?/1)
    Tether.kill(vm, :sigkill)
    assert_receive {:DOWN, ^vm, :process, _, {:signal, :sigkill, false}}, 5000
    assert wait_gone(report["MEMBERS"] ++ report["ESCAPEES"] ++ [new], 1000) == []
  end

  test "{:detach, true} lets a process outlive its owner and the VM on purpose" do
    code = """
    {:ok, _} = Application.ensure_all_started(:tether)
    {:ok, _, detached} = Tether.run(["sleep", "1000"], detach: true)
    {:ok, _, attached} = Tether.run(["sleep", "1000"])
    IO.puts("MEMBERS \#{detached} \#{attached}")
    IO.puts("ACTION \#{System.os_time(:millisecond)}")
    Process.sleep(:infinity)
    """

    ebin = Path.join(:code.lib_dir(:tether), "ebin")
    # The inner VM is our child: what it leaves behind is ours to stop, unless we keep it.
    {:ok, _, vm} =
      Tether.run(["elixir", "-pa", ebin, "-e", code], [:stdout, :monitor, background_jobs: :keep])

    report = read_report(vm, "ACTION", %{})
    [detached, attached] = report["MEMBERS"]
    Tether.kill(vm, :sigkill)
    assert_receive {:DOWN, ^vm, :process, _, _}, 5000
    assert wait_gone([attached], 1000) == []
    assert alive?(detached)
    System.cmd("kill", ["-9", Integer.to_string(detached)])
    assert wait_gone([detached]) == []
  end
end

defmodule Tether.OwnershipTest do
  # Stops the :tether application and starts other VMs: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  defp start_in_owner(command, options) do
    parent = self()

    owner =
      spawn(fn ->
        {:ok, pid, os_pid} = Tether.run(command, options)
        send(parent, {:started, pid, os_pid})

        receive do:
                  (
                    :exit -> exit(:normal)
                    :crash -> raise "owner crashed"
                  )
      end)

    assert_receive {:started, pid, os_pid}, 5000
    {owner, pid, os_pid}
  end

  test "a child is stopped when its owner exits normally" do
    {owner, pid, os_pid} = start_in_owner(["sleep", "100"], [])
    ref = Process.monitor(pid)
    send(owner, :exit)
    assert_receive {:DOWN, ^ref, :process, ^pid, {:signal, :sigterm, false}}, 5000
    assert wait_gone([os_pid]) == []
  end

  test "a child and its group are stopped when its owner crashes" do
    {owner, pid, os_pid} = start_in_owner([script("grandchild.sh")], stdout: self())
    grandchild = os_pid |> first_line() |> String.to_integer()
    ref = Process.monitor(pid)
    assert Enum.sort(group_members(os_pid)) == Enum.sort([os_pid, grandchild])
    ExUnit.CaptureLog.capture_log(fn -> send(owner, :crash) end)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5000
    assert wait_gone(group_members(os_pid) ++ [os_pid]) == []
  end

  test "a child that ignores SIGTERM is killed kill_timeout after its owner died" do
    {owner, pid, os_pid} =
      start_in_owner([script("ignore_term.sh")], kill_timeout: 1, stdout: self())

    assert first_line(os_pid) == "ready"
    ref = Process.monitor(pid)
    send(owner, :exit)
    assert_receive {:DOWN, ^ref, :process, ^pid, {:signal, :sigkill, false}}, 3000
    assert wait_gone([os_pid]) == []
  end

  test "killing the Tether.Process (dropping the native handle) stops the OS process" do
    {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigterm, false}}, 5000
    assert wait_gone([os_pid]) == []
  end

  test "stopping the application stops every child, without waiting for nothing" do
    {:ok, _, plain} = Tether.run(["sleep", "100"], [:monitor])
    {:ok, _, group} = Tether.run([script("grandchild.sh")], [:monitor, :stdout])
    grandchild = group |> first_line() |> String.to_integer()

    {:ok, _, stubborn} =
      Tether.run([script("ignore_term.sh")], [:monitor, :stdout, kill_timeout: 1])

    assert first_line(stubborn) == "ready"

    started = System.monotonic_time(:millisecond)
    :ok = Application.stop(:tether)
    elapsed = System.monotonic_time(:millisecond) - started
    {:ok, _} = Application.ensure_all_started(:tether)

    assert Tether.which_processes() == []
    assert wait_gone([plain, group, grandchild, stubborn], 0) == []
    # The stubborn child needs its kill timeout (1 s); nothing else is waited for.
    assert elapsed >= 990 and elapsed < 5000, "application stop took #{elapsed} ms"
  end

  test "when the VM halts, its children die with it" do
    code = """
    {:ok, _} = Application.ensure_all_started(:tether)
    {:ok, _, os_pid} = Tether.run(["sleep", "100"])
    IO.puts("child=\#{os_pid}")
    System.halt(0)
    """

    {output, 0} = run_beam(code)
    [_, os_pid] = Regex.run(~r/child=(\d+)/, output)
    assert wait_gone([String.to_integer(os_pid)]) == []
  end

  test "System.stop stops children gracefully" do
    code = """
    {:ok, _} = Application.ensure_all_started(:tether)
    {:ok, _, os_pid} = Tether.run(["#{script("grandchild.sh")}"], [:stdout])
    receive do {:stdout, ^os_pid, line} -> IO.puts("child=\#{os_pid} grandchild=\#{String.trim(line)}") end
    System.stop(0)
    Process.sleep(:infinity)
    """

    {output, 0} = run_beam(code)
    [_, child, grandchild] = Regex.run(~r/child=(\d+) grandchild=(\d+)/, output)
    assert wait_gone([String.to_integer(child), String.to_integer(grandchild)]) == []
  end
end

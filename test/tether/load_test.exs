defmodule Tether.LoadTest do
  # Counts the VM's descriptors, threads, memory and zombies; changes SIGCHLD: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  @moduletag timeout: 300_000

  defp run_to_exit(command, options \\ []) do
    {:ok, _, os_pid} = Tether.run(command, [:monitor | options])

    receive do
      {:DOWN, ^os_pid, :process, _, reason} -> reason
    after
      10_000 -> flunk("no DOWN for #{inspect(command)}")
    end
  end

  defp zombie_children do
    me = System.pid()

    for entry <- File.ls!("/proc"),
        {_, ""} <- [Integer.parse(entry)],
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, rest] <- [String.split(stat, ") ", parts: 2)],
        ["Z", ^me | _] <- [String.split(rest, " ", parts: 3)],
        do: entry
  end

  defp vm_memory do
    :erlang.garbage_collect()
    :erlang.memory(:total)
  end

  test "10,000 sequential spawns: fds, threads and memory return to baseline; no zombie" do
    run_to_exit(["true"], [:stdout, :stderr])
    fds = open_fds()
    threads = thread_count()
    memory = vm_memory()

    for _ <- 1..10_000 do
      :normal = run_to_exit(["true"], [:stdout, :stderr])
    end

    assert MapSet.difference(open_fds(), fds) == MapSet.new()
    assert thread_count() == threads
    assert zombie_children() == []
    grown = vm_memory() - memory
    assert grown < 2 * 1024 * 1024, "VM memory grew by #{grown} bytes"
    assert Tether.which_processes() == []
  end

  test "1,000 concurrent children with random exit codes and signals: every reason is exact" do
    signals = [
      sighup: 1,
      sigint: 2,
      sigquit: 3,
      sigabrt: 6,
      sigkill: 9,
      sigusr1: 10,
      sigusr2: 12,
      sigpipe: 13,
      sigalrm: 14,
      sigterm: 15
    ]

    expected =
      for _ <- 1..1000 do
        {command, reason} =
          if :rand.uniform(2) == 1 do
            code = :rand.uniform(256) - 1
            {"exit #{code}", if(code == 0, do: :normal, else: {:exit_status, code})}
          else
            {name, number} = Enum.random(signals)
            # No core files whatever the machine's limits: the flag must read false.
            {"ulimit -c 0; kill -#{number} $$", {:signal, name, false}}
          end

        {:ok, _, os_pid} = Tether.run(command, [:monitor])
        {os_pid, reason}
      end

    for {os_pid, reason} <- expected do
      assert_receive {:DOWN, ^os_pid, :process, _, ^reason}, 30_000
    end

    assert Tether.which_processes() == []
    assert zombie_children() == []
  end

  test "with SIGCHLD ignored, run refuses instead of reporting wrong statuses" do
    try do
      :ok = :os.set_signal(:sigchld, :ignore)
      assert Tether.run(["true"]) == {:error, :sigchld_ignored}
    after
      :ok = :os.set_signal(:sigchld, :default)
    end

    assert run_to_exit("exit 4") == {:exit_status, 4}
  end

  @tag :tmp_dir
  test "a recycled pid is never signalled: after the DOWN, kill and stop say :no_process", %{
    tmp_dir: dir
  } do
    {:ok, _, os_pid} = Tether.run(["true"], [:monitor])
    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000

    # Make the kernel hand os_pid to an unrelated process (needs root to write ns_last_pid).
    reused = reuse_pid(os_pid, dir)
    root? = File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m

    if root?, do: assert(reused, "could not make the kernel reuse pid #{os_pid}")

    if reused do
      assert Tether.kill(os_pid, :sigkill) == {:error, :no_process}
      assert Tether.stop(os_pid) == {:error, :no_process}
      assert Tether.status(os_pid) == {:error, :no_process}
      assert alive?(os_pid), "the unrelated process with the recycled pid was signalled"
      Port.close(reused)
      System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    else
      # Without root the number cannot be forced; the guarantee still holds by construction.
      assert Tether.kill(os_pid, :sigkill) == {:error, :no_process}
    end
  end

  defp reuse_pid(os_pid, dir, tries \\ 20)
  defp reuse_pid(_os_pid, _dir, 0), do: nil

  defp reuse_pid(os_pid, dir, tries) do
    with :ok <- File.write("/proc/sys/kernel/ns_last_pid", Integer.to_string(os_pid - 1)) do
      port =
        Port.open({:spawn_executable, System.find_executable("sleep")}, args: ["100"], cd: dir)

      if Port.info(port, :os_pid) == {:os_pid, os_pid} do
        port
      else
        Port.close(port)
        reuse_pid(os_pid, dir, tries - 1)
      end
    else
      _ -> nil
    end
  end
end

defmodule Tether.OsHelpers do
  @moduledoc """
  What the tests check from outside: whether OS processes exist (read from `/proc`), and the
  messages a run produces.
  """

  # Each sets `p` to the pid of a process that tries to escape.
  @escapes [
    background_job: "sleep 1000 >/dev/null 2>&1 & p=$!",
    nohup: "nohup sleep 1000 >/dev/null 2>&1 & p=$!",
    subshell_double_fork: "p=$( (sleep 1000 >/dev/null 2>&1 & echo $!) )",
    setsid: "setsid sleep 1000 >/dev/null 2>&1 & p=$!",
    double_fork_setsid: "p=$( (setsid sleep 1000 >/dev/null 2>&1 & echo $!) )",
    bash_set_m: "p=$(bash -c 'set -m; sleep 1000 >/dev/null 2>&1 & echo $!')",
    # Parent and child both move the child into a group of its own (as shells do: whichever
    # runs first), before the parent tells its pid.
    perl_setpgrp:
      ~S[p=$(perl -e 'if ($p = fork) { setpgrp($p, $p); print "$p\n"; exit } setpgrp(0, 0); open STDOUT, ">/dev/null"; exec "sleep", 1000')]
  ]

  @doc "Ways a process started by a child tries to outlive it: `{name, shell snippet}`."
  def escapes, do: @escapes

  # Runs an escape, waits until the escapee runs `sleep` (its setsid/setpgid is then done) and
  # prints its pid.
  @doc "A command that runs an escape `snippet` and prints the escapee's pid once it is done."
  def escape_command(snippet) do
    ~s{#{snippet}; until [ "$(cat /proc/$p/comm 2>/dev/null)" = sleep ]; do :; done; echo $p}
  end

  @doc "Whether a live process has `marker` in its command line (read from /proc)."
  def cmdline_running?(marker) do
    Enum.any?(File.ls!("/proc"), fn entry ->
      case File.read("/proc/#{entry}/cmdline") do
        {:ok, cmdline} -> String.contains?(cmdline, marker)
        {:error, _} -> false
      end
    end)
  end

  @doc """
  The capability sets of `os_pid`, as masks (bit n: capability n) read from
  `/proc/<os_pid>/status`: `%{effective: _, permitted: _, inheritable: _, ambient: _, bounding: _}`.
  """
  def capabilities(os_pid) do
    status = File.read!("/proc/#{os_pid}/status")

    sets = [
      effective: "Eff",
      permitted: "Prm",
      inheritable: "Inh",
      ambient: "Amb",
      bounding: "Bnd"
    ]

    for {set, field} <- sets, into: %{} do
      [_, hex] = Regex.run(~r/^Cap#{field}:\s+([0-9a-f]+)$/m, status)
      {set, String.to_integer(hex, 16)}
    end
  end

  @doc "Capability sets that are all `mask`, as `capabilities/1` reads them."
  def every_set(mask),
    do: %{effective: mask, permitted: mask, inheritable: mask, ambient: mask, bounding: mask}

  @doc "The capabilities this VM holds and may pass on: permitted, within its bounding set."
  def held_capabilities do
    %{permitted: permitted, bounding: bounding} = capabilities("self")
    Bitwise.band(permitted, bounding)
  end

  @doc "Path of a helper script under test/support/scripts."
  def script(name), do: Path.expand("scripts/#{name}", __DIR__)

  @doc "Whether `os_pid` is alive: present in /proc and not a zombie."
  defdelegate alive?(os_pid), to: Tether.ProcFs

  @doc "The live pids whose process group is `pgid` (read from /proc)."
  defdelegate group_members(pgid), to: Tether.ProcFs

  @doc "Waits up to `timeout` ms for every pid in `pids` to be gone; returns the survivors."
  def wait_gone(pids, timeout \\ 3000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_gone(List.wrap(pids), deadline)
  end

  defp do_wait_gone(pids, deadline) do
    case Enum.filter(pids, &alive?/1) do
      [] ->
        []

      alive ->
        if System.monotonic_time(:millisecond) > deadline do
          alive
        else
          Process.sleep(10)
          do_wait_gone(alive, deadline)
        end
    end
  end

  @doc "Collects `{stream, data}` of `os_pid` until its `:DOWN`; returns `{stdout, stderr, reason}`."
  def collect(os_pid, timeout \\ 20_000) do
    do_collect(os_pid, timeout, [], [])
  end

  defp do_collect(os_pid, timeout, out, err) do
    receive do
      {:stdout, ^os_pid, data} ->
        do_collect(os_pid, timeout, [out | data], err)

      {:stderr, ^os_pid, data} ->
        do_collect(os_pid, timeout, out, [err | data])

      {:DOWN, ^os_pid, :process, _pid, reason} ->
        {IO.iodata_to_binary(out), IO.iodata_to_binary(err), reason}
    after
      timeout -> raise "no :DOWN for #{os_pid} within #{timeout} ms"
    end
  end

  @doc "Receives the first line of stdout of `os_pid` (the helper scripts print a pid or `ready`)."
  def first_line(os_pid, timeout \\ 10_000) do
    receive do
      {:stdout, ^os_pid, data} -> data |> String.split("\n") |> hd()
    after
      timeout -> raise "no output from #{os_pid}"
    end
  end

  @doc """
  This VM's open descriptors, as `{fd, what it points to}`. Comparing two snapshots shows the
  descriptors opened in between (a count would also move when unrelated ones close).

  The directories of the spare cgroups the cgroup janitor keeps ready are left out (they
  change as spares are taken and made); `spare_cgroup_fds/0` counts them.
  """
  def open_fds do
    {_spares, others} = split_open_fds()
    MapSet.new(others)
  end

  @doc "How many descriptors of this VM are open on directories of its cgroup tree."
  def spare_cgroup_fds, do: split_open_fds() |> elem(0) |> length()

  # This VM's open descriptors, split into those on a directory right below its cgroup root
  # (the spares') and the others.
  defp split_open_fds do
    root =
      case Tether.Native.cgroups() do
        {:ok, root} when is_binary(root) -> root
        _ -> nil
      end

    for fd <- File.ls!("/proc/self/fd"),
        {:ok, target} <- [:file.read_link(~c"/proc/self/fd/#{fd}")] do
      {fd, target}
    end
    |> Enum.split_with(fn {_, target} ->
      path = List.to_string(target)
      root != nil and Path.dirname(path) == root and File.dir?(path)
    end)
  end

  @doc "Number of OS threads of this VM."
  def thread_count, do: length(File.ls!("/proc/self/task"))

  @doc "Runs `code` in a fresh `elixir` VM that has Tether's code paths; returns `{output, status}`."
  def run_beam(code, timeout \\ 60_000) do
    ebin = Path.join(:code.lib_dir(:tether), "ebin")

    task =
      Task.async(fn -> System.cmd("elixir", ["-pa", ebin, "-e", code], stderr_to_stdout: true) end)

    Task.await(task, timeout)
  end

  @doc "Polls `fun` every 10 ms until it returns true (true) or `timeout` ms pass (false)."
  def wait_until(fun, timeout \\ 5000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_until(fun, deadline)
  end

  defp do_wait_until(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(10)
        do_wait_until(fun, deadline)
    end
  end

  @doc """
  Runs `fun` with `:long_schedule` monitoring at `ms`; returns `{result, reports}` where the
  reports are those whose process was in or out of a `Tether.Native` function.
  """
  def native_long_schedules(ms, fun) do
    :erlang.system_monitor(self(), [{:long_schedule, ms}])

    result =
      try do
        fun.()
      after
        :erlang.system_monitor(:undefined)
      end

    reports =
      for {:monitor, _, :long_schedule, info} <- flush_long_schedules([]),
          Enum.any?([info[:in], info[:out]], &match?({Tether.Native, _, _}, &1)),
          do: info

    {result, reports}
  end

  defp flush_long_schedules(acc) do
    receive do
      {:monitor, _, :long_schedule, _} = message -> flush_long_schedules([message | acc])
    after
      0 -> acc
    end
  end

  @doc """
  Starts a cluster of `count` nodes with names and ports no other test uses (a node of a
  previous test may still be leaving epmd); returns the nodes.
  """
  def start_test_cluster!(tag, count, options \\ []) do
    prefix = "#{tag}#{System.unique_integer([:positive])}n"
    port = 20_000 + :rand.uniform(20_000)
    options = [node_count: count, name_prefix: prefix, base_http_port: port] ++ options
    {:ok, nodes} = Tether.TestCluster.Manager.start_cluster(options)
    nodes
  end
end

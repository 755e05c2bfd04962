defmodule Tether.FuzzTest do
  # Random terms against every public function of Tether (and Tether.Daemon), the raw NIF
  # functions, and every public function of :exec. A call may return a documented value, an
  # {:error, atom}, or raise ArgumentError; anything else, a hang or a VM crash is a failure.
  #
  # Replayable: the arguments of every call are generated in the test process from one seed,
  # printed with any failure. `TETHER_FUZZ_SEED=123 mix test test/tether/fuzz_test.exs` replays
  # it; `TETHER_FUZZ_CALLS=n` changes the number of calls.
  #
  # Safe: every command that can run is `true`; manage/2 only ever gets os_pids this test
  # started, or ones it must refuse (pid 1, the VM, its ancestors, its helpers), checked again
  # just before the call (pids are recycled: pid_max may be 32768); kill/2 and stop/1 reach only
  # what Tether runs. Each call runs in a process of its own, whose exit stops what it started.
  # Not async: it counts live children at the end.
  use ExUnit.Case, async: false
  import Tether.OsHelpers
  alias Tether.TermGenerator, as: Gen

  @moduletag timeout: 1_800_000

  setup do
    # Random options may name output files: keep whatever they create out of the repository.
    cwd = File.cwd!()
    tmp = Path.join(System.tmp_dir!(), "tether-fuzz-#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    File.cd!(tmp)

    on_exit(fn ->
      File.cd!(cwd)
      File.rm_rf!(tmp)
    end)

    {:ok, _, live} = Tether.run(["sleep", "1000"], [])
    {:ok, _, dead} = Tether.run(["true"], [:monitor])
    assert_receive {:DOWN, ^dead, _, _, _}, 5000
    dead_pid = spawn(fn -> :ok end)
    live_pid = spawn(fn -> Process.sleep(:infinity) end)

    # Two processes of this test that Tether does not run, for manage/2: one leads its own
    # group (setsid), one is in the group of a shell that Tether runs.
    foreign_marker = "1000.#{System.unique_integer([:positive])}"

    {_, 0} =
      System.cmd("sh", ["-c", "setsid -f sleep #{foreign_marker} </dev/null >/dev/null 2>&1"])

    assert wait_until(fn -> find_sleep(foreign_marker) != nil end)
    foreign = find_sleep(foreign_marker)

    inner_marker = "1000.#{System.unique_integer([:positive])}"
    {:ok, _, shell} = Tether.run(["sh", "-c", "sleep #{inner_marker} & echo $!; wait"], [:stdout])
    inner = shell |> first_line() |> String.to_integer()

    on_exit(fn ->
      Tether.kill(live, :sigkill)
      Tether.kill(shell, :sigkill)
      # Ours only if it still is the sleep we started.
      if find_sleep(foreign_marker) == foreign, do: System.cmd("kill", ["-KILL", "#{foreign}"])
      Process.exit(live_pid, :kill)
    end)

    vm = String.to_integer(System.pid())
    refused = [1, vm, vm_pgid(vm), Tether.Native.watchdog_os_pid() | ancestors(vm)]

    %{
      context: %{
        os_pids: [live, dead, 1, 0, -1, 2 ** 40 | refused] ++ [foreign, inner, shell],
        # manage/2 targets: ours (checked again at call time) or refused by manage/2.
        ours: %{
          live => :tether,
          shell => :tether,
          foreign => foreign_marker,
          inner => inner_marker
        },
        refused: Enum.uniq(refused),
        dead_pid: dead_pid,
        live_pid: live_pid
      }
    }
  end

  defp find_sleep(marker) do
    Enum.find_value(File.ls!("/proc"), fn entry ->
      case File.read("/proc/#{entry}/cmdline") do
        {:ok, cmdline} -> if cmdline == "sleep\0#{marker}\0", do: String.to_integer(entry)
        {:error, _} -> nil
      end
    end)
  end

  defp vm_pgid(vm), do: elem(Tether.ProcFs.stat(vm), 1).pgrp

  defp ancestors(pid) do
    case Tether.ProcFs.stat(pid) do
      {:ok, %{ppid: ppid}} when ppid > 0 -> [ppid | ancestors(ppid)]
      _ -> []
    end
  end

  # ── The calls ──────────────────────────────────────────────────────────────────────────
  #
  # {name, generate, call}: `generate` runs in the test process (so the seed decides every
  # argument), `call` in a process of its own.

  defp g(context), do: Gen.term(context)

  # Half garbage, half plausible: enough calls get as far as a spawn.
  defp run_options(context) do
    options =
      if :rand.uniform(2) == 1, do: Gen.options(context), else: Gen.plausible_options(context)

    Gen.safe_options(options)
  end

  defp command(context) do
    if :rand.uniform(2) == 1, do: Gen.command(context), else: Enum.random([["true"], "true"])
  end

  defp tether_calls(context) do
    run_options = fn -> run_options(context) end

    [
      {:run, fn -> [command(context), run_options.()] end, &apply(Tether, :run, &1)},
      {:run_1, fn -> [command(context)] end, &apply(Tether, :run, &1)},
      {:run_link, fn -> [command(context), run_options.()] end, &apply(Tether, :run_link, &1)},
      {:stop, fn -> [g(context)] end, &apply(Tether, :stop, &1)},
      {:kill, fn -> [g(context), g(context)] end, &apply(Tether, :kill, &1)},
      {:status, fn -> [g(context)] end, &apply(Tether, :status, &1)},
      {:info_1, fn -> [g(context)] end, &apply(Tether, :info, &1)},
      {:info_0, fn -> [] end, fn [] -> Tether.info() end},
      {:which_processes, fn -> [] end, fn [] -> Tether.which_processes() end},
      {:pid, fn -> [g(context)] end, &apply(Tether, :pid, &1)},
      {:os_pid, fn -> [g(context)] end, &apply(Tether, :os_pid, &1)},
      {:signal_number, fn -> [g(context)] end, &apply(Tether, :signal_number, &1)},
      {:send, fn -> [g(context), g(context)] end, &apply(Tether, :send, &1)},
      {:flush_stdin, fn -> [g(context), Enum.random([0, 10, -1, :infinity, g(context)])] end,
       &apply(Tether, :flush_stdin, &1)},
      {:winsz, fn -> [g(context), g(context), g(context)] end, &apply(Tether, :winsz, &1)},
      {:activate, fn -> [g(context), g(context), g(context)] end, &apply(Tether, :activate, &1)},
      {:activate_2, fn -> [g(context), g(context)] end, &apply(Tether, :activate, &1)},
      {:stream, fn -> [command(context), stream_options(context)] end,
       fn args -> args |> (&apply(Tether, :stream, &1)).() |> Enum.take(3) end},
      {:stream!, fn -> [command(context), stream_options(context)] end,
       fn args -> args |> (&apply(Tether, :stream!, &1)).() |> Enum.take(3) end},
      {:manage, fn -> [manage_target(context), Gen.safe_options(Gen.manage_options(context))] end,
       &safe_manage(context, fn [t, o] -> Tether.manage(t, o) end, &1)},
      {:manage_1, fn -> [manage_target(context)] end,
       &safe_manage(context, fn [t] -> Tether.manage(t) end, &1)},
      {:cmd, fn -> [Gen.program(context), cmd_args(context), Gen.cmd_options(context)] end,
       &apply(Tether, :cmd, &1)},
      {:daemon_start_link, fn -> [daemon_options(context)] end,
       &apply(Tether.Daemon, :start_link, &1)},
      {:daemon_child_spec, fn -> [daemon_options(context)] end,
       &apply(Tether.Daemon, :child_spec, &1)}
    ]
  end

  defp native_calls(context) do
    [
      {:native_stop, fn -> [g(context)] end, &apply(Tether.Native, :stop, &1)},
      {:native_kill, fn -> [g(context), g(context)] end, &apply(Tether.Native, :kill, &1)},
      {:native_status, fn -> [g(context)] end, &apply(Tether.Native, :status, &1)},
      {:native_process_of, fn -> [g(context)] end, &apply(Tether.Native, :process_of, &1)},
      {:native_signal_number, fn -> [g(context)] end, &apply(Tether.Native, :signal_number, &1)},
      {:native_start, fn -> [native_spec(context), g(context), g(context), g(context)] end,
       &apply(Tether.Native, :start, &1)},
      {:native_stop_all, fn -> [not_a_pid(context)] end, &apply(Tether.Native, :stop_all, &1)},
      {:native_write, fn -> [g(context), g(context)] end, &apply(Tether.Native, :write, &1)},
      {:native_close_stdin, fn -> [g(context)] end, &apply(Tether.Native, :close_stdin, &1)},
      {:native_winsz, fn -> [g(context), g(context), g(context)] end,
       &apply(Tether.Native, :winsz, &1)}
    ]
  end

  # The :exec calls that survive the fuzzer today (the default run keeps them).
  defp exec_calls_passing(context) do
    run_options = fn -> run_options(context) end

    [
      {:exec_run, fn -> [exec_command(context), run_options.()] end, &apply(:exec, :run, &1)},
      {:exec_stop, fn -> [g(context)] end, &apply(:exec, :stop, &1)},
      {:exec_kill, fn -> [g(context), g(context)] end, &apply(:exec, :kill, &1)}
    ]
  end

  # Every public function of :exec.
  defp exec_calls(context) do
    run_options = fn -> run_options(context) end

    exec_calls_passing(context) ++
      [
        {:exec_start_0, fn -> [] end, fn [] -> :exec.start() end},
        {:exec_start_1, fn -> [g(context)] end, &apply(:exec, :start, &1)},
        {:exec_start_link, fn -> [g(context)] end, &apply(:exec, :start_link, &1)},
        {:exec_child_spec, fn -> [g(context)] end, &apply(:exec, :child_spec, &1)},
        {:exec_run_3, fn -> [exec_command(context), run_options.(), g(context)] end,
         &apply(:exec, :run, &1)},
        {:exec_run_link, fn -> [exec_command(context), run_options.()] end,
         &apply(:exec, :run_link, &1)},
        {:exec_manage,
         fn -> [manage_target(context), Gen.safe_options(Gen.manage_options(context))] end,
         &safe_manage(context, fn [t, o] -> :exec.manage(t, o) end, &1)},
        {:exec_send, fn -> [g(context), g(context)] end, &apply(:exec, :send, &1)},
        {:exec_winsz, fn -> [g(context), g(context), g(context)] end, &apply(:exec, :winsz, &1)},
        {:exec_pty_opts, fn -> [g(context), g(context)] end, &apply(:exec, :pty_opts, &1)},
        {:exec_stop_and_wait, fn -> [g(context), Enum.random([0, 10, -1, g(context)])] end,
         &apply(:exec, :stop_and_wait, &1)},
        {:exec_which_children, fn -> [] end, fn [] -> :exec.which_children() end},
        {:exec_ospid, fn -> [g(context)] end, &apply(:exec, :ospid, &1)},
        {:exec_pid, fn -> [g(context)] end, &apply(:exec, :pid, &1)},
        {:exec_debug, fn -> [g(context)] end, &apply(:exec, :debug, &1)},
        {:exec_status, fn -> [g(context)] end, &apply(:exec, :status, &1)},
        {:exec_signal, fn -> [g(context)] end, &apply(:exec, :signal, &1)},
        {:exec_signal_to_int, fn -> [g(context)] end, &apply(:exec, :signal_to_int, &1)}
      ]
  end

  defp stream_options(context) do
    options = run_options(context)

    if is_list(options) and :rand.uniform(3) == 1,
      do: [{:input, Gen.term(context, 1)} | options],
      else: options
  end

  defp cmd_args(context) do
    Enum.random([[], ["x"], [Gen.binary()], Gen.term(context, 1)])
  end

  defp daemon_options(context) do
    case :rand.uniform(4) do
      1 -> Gen.term(context)
      _ -> [cmd: command(context), run: run_options(context)]
    end
  end

  # An os_pid manage/2 may be given: one of ours, one it must refuse, or not an os_pid at all.
  defp manage_target(context) do
    case :rand.uniform(4) do
      1 -> Enum.random(Map.keys(context.ours))
      2 -> Enum.random(context.refused)
      3 -> Enum.random([0, -1, 2 ** 40, 2 ** 64])
      4 -> non_integer(context)
    end
  end

  defp non_integer(context) do
    case Gen.term(context, 1) do
      n when is_integer(n) -> :not_an_os_pid
      other -> other
    end
  end

  # Just before the call: an os_pid of ours that has exited may now be anyone's. Such a
  # target is replaced by one no process has.
  defp safe_manage(context, fun, [target | rest]) do
    target =
      case context.ours do
        %{^target => :tether} ->
          if match?({:ok, _}, Tether.pid(target)), do: target, else: 2 ** 40

        %{^target => marker} ->
          if find_sleep(marker) == target, do: target, else: 2 ** 40

        _ ->
          target
      end

    fun.([target | rest])
  end

  # Either garbage or a well-formed spec with random field values, always running `true`.
  # Its group is never a random integer: the raw NIF has no group check of its own yet.
  defp native_spec(context) do
    if :rand.uniform(2) == 1 do
      Gen.term(context)
    else
      %{
        argv: ["true"],
        executable: Enum.random([nil, "/bin/true", Gen.term(context, 0)]),
        env: Enum.random([[], [:clear], [{"A", nil}], Gen.term(context, 1)]),
        cd: Enum.random([nil, "/", Gen.term(context, 0)]),
        stdin: Enum.random([:null, :pipe, Gen.term(context, 0)]),
        stdout: Enum.random([:null, {:pipe, self()}, Gen.term(context, 0)]),
        stderr: Enum.random([:null, :other, Gen.term(context, 0)]),
        pty: Enum.random([nil, {24, 80, false}, Gen.term(context, 0)]),
        group: Enum.random([:new, :inherit, non_integer(context)]),
        stop: Enum.random([[], [{:signal, 15, 10}], Gen.term(context, 1)]),
        nice: Enum.random([nil, 5, Gen.term(context, 0)]),
        user: nil,
        rlimits: Enum.random([[], [{"nofile", 100, 100}], Gen.term(context, 1)]),
        idle_timeout_ms: Enum.random([nil, Gen.term(context, 0)]),
        max_output: Enum.random([nil, Gen.term(context, 0)]),
        success_exit_code: Enum.random([0, Gen.term(context, 0)]),
        monitor: Enum.random([nil, self()]),
        kill_group: Enum.random([true, false, Gen.term(context, 0)]),
        detach: false
      }
    end
  end

  # Any runnable erlexec command runs `true` only.
  defp exec_command(context) do
    case Gen.command(context) do
      [_ | _] = argv when is_binary(hd(argv)) -> argv
      _ -> Enum.random([~c"true", [~c"true"], Gen.term(context, 0)])
    end
  end

  defp not_a_pid(context) do
    case Gen.term(context, 0) do
      pid when is_pid(pid) -> :not_a_pid
      other -> other
    end
  end

  # ── What is acceptable ─────────────────────────────────────────────────────────────────

  defp acceptable?(name, {:ok, result}), do: acceptable_result?(name, result)
  defp acceptable?(_name, {:raised, %ArgumentError{}}), do: true
  # Documented: cmd/3 raises like System.cmd/3 when the program cannot run.
  defp acceptable?(:cmd, {:raised, %ErlangError{original: reason}}), do: is_atom(reason)
  # Documented: a stream whose process cannot start raises at the first element.
  defp acceptable?(name, {:raised, %Tether.Stream.ExitError{}}) when name in [:stream, :stream!],
    do: true

  defp acceptable?(_name, _), do: false

  defp acceptable_result?(name, {:ok, pid, os_pid})
       when name in [:run, :run_1, :run_link, :manage, :manage_1, :exec_manage] or
              name in [:exec_run, :exec_run_3, :exec_run_link],
       do: is_pid(pid) and is_integer(os_pid)

  defp acceptable_result?(name, {kind, output})
       when kind in [:ok, :error] and is_list(output) and
              name in [:run, :run_link, :exec_run, :exec_run_3, :exec_run_link],
       do: true

  # :exec answers with erlexec's error terms: the bad option itself, or erlexec's strings.
  defp acceptable_result?(name, {:error, reason})
       when name in [:exec_run, :exec_run_3, :exec_run_link, :exec_stop, :exec_kill] or
              name in [:exec_pty_opts, :exec_manage, :exec_stop_and_wait, :exec_debug] or
              name in [:exec_winsz, :exec_start_0, :exec_start_1, :exec_start_link],
       do: erlexec_error?(reason)

  defp acceptable_result?(:native_start, ref), do: is_reference(ref)
  defp acceptable_result?(:info_1, info) when is_map(info), do: is_integer(info.os_pid)
  defp acceptable_result?(:info_0, %{live: live}), do: is_integer(live)

  defp acceptable_result?(name, list) when name in [:which_processes, :exec_which_children],
    do: is_list(list) and Enum.all?(list, &is_integer/1)

  defp acceptable_result?(name, chunks) when name in [:stream, :stream!], do: is_list(chunks)

  defp acceptable_result?(:cmd, {_collected, status}),
    do: is_integer(status) or status == :timeout

  defp acceptable_result?(:daemon_start_link, {:ok, pid}), do: is_pid(pid)
  defp acceptable_result?(:daemon_child_spec, %{start: _}), do: true
  defp acceptable_result?(:exec_child_spec, %{start: _}), do: true

  defp acceptable_result?(name, {:ok, pid}) when name in [:exec_start_0, :exec_start_1],
    do: is_pid(pid)

  defp acceptable_result?(:exec_start_link, {:ok, pid}), do: is_pid(pid)
  defp acceptable_result?(:exec_ospid, os_pid) when is_integer(os_pid), do: true
  defp acceptable_result?(:exec_pid, pid), do: is_pid(pid) or pid == :undefined
  defp acceptable_result?(:exec_debug, {:ok, level}), do: is_integer(level)
  defp acceptable_result?(:exec_status, {:status, n}), do: is_integer(n)
  defp acceptable_result?(:exec_status, {:signal, s, core}), do: is_boolean(core) and s != nil
  defp acceptable_result?(:exec_signal, s), do: is_atom(s) or is_integer(s)
  defp acceptable_result?(:exec_signal_to_int, n), do: is_integer(n)
  # stop_and_wait returns the exit reason of the process.
  defp acceptable_result?(:exec_stop_and_wait, _reason), do: true
  defp acceptable_result?(_, {:error, reason}), do: is_atom(reason)
  defp acceptable_result?(_, :ok), do: true
  defp acceptable_result?(_, {:status, s}), do: s in [:running, :stopping, :stopped]
  defp acceptable_result?(_, {:ok, value}), do: is_pid(value) or is_integer(value)
  defp acceptable_result?(:signal_number, n), do: is_integer(n)
  defp acceptable_result?(:native_signal_number, n), do: is_integer(n) or is_nil(n)
  defp acceptable_result?(_, _), do: false

  defp erlexec_error?(reason) when is_atom(reason), do: true
  # start/0,1 and start_link/1 while the server runs.
  defp erlexec_error?({:already_started, pid}), do: is_pid(pid)

  defp erlexec_error?({tag, _})
       when tag in [:invalid_option, :invalid_env_value, :invalid_pty_value, :invalid_command],
       do: true

  # erlexec's messages are io_lib strings: a name it was given (`{user, <<255>>}`) is in them as
  # it came.
  defp erlexec_error?(message), do: is_binary(message) or :io_lib.char_list(message)

  # ── Running ────────────────────────────────────────────────────────────────────────────

  # Each call runs in a process of its own with a deadline: a hang fails the test. The process
  # traps exits (a start_link that fails returns its error), then exits abnormally, so that
  # whatever it linked or owns is stopped.
  defp call(fun, args, deadline \\ 5000) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        Process.flag(:trap_exit, true)

        result =
          try do
            {:ok, fun.(args)}
          rescue
            error -> {:raised, error}
          catch
            kind, reason -> {kind, reason}
          end

        send(parent, {self(), result})
        exit(:fuzz_call_done)
      end)

    receive do
      {^pid, result} ->
        receive do: ({:DOWN, ^ref, :process, ^pid, _} -> result)

      {:DOWN, ^ref, :process, ^pid, reason} ->
        {:died, reason}
    after
      deadline ->
        Process.exit(pid, :kill)
        :hang
    end
  end

  # :exec.ospid/1 gives a pid that does not answer erlexec's protocol 5 s, as erlexec does.
  defp deadline(:exec_ospid), do: 6000
  defp deadline(_name), do: 5000

  defp seed do
    case System.get_env("TETHER_FUZZ_SEED") do
      nil -> :rand.uniform(1_000_000_000)
      seed -> String.to_integer(seed)
    end
  end

  defp count(default) do
    case System.get_env("TETHER_FUZZ_CALLS") do
      nil -> default
      count -> String.to_integer(count)
    end
  end

  defp fuzz(context, calls, count) do
    seed = seed()
    :rand.seed(:exsss, {seed, 14, 14})
    replay = "replay: TETHER_FUZZ_SEED=#{seed} mix test #{__ENV__.file}"

    spawned = Tether.info().spawned
    started = System.monotonic_time(:millisecond)

    {failures, outcomes} =
      Enum.reduce(1..count, {[], %{}}, fn i, {failures, outcomes} ->
        {name, generate, fun} = Enum.random(calls)
        args = generate.()
        result = call(fun, args, deadline(name))
        if rem(i, 200) == 0, do: flush_mailbox()
        outcomes = Map.update(outcomes, outcome(result), 1, &(&1 + 1))

        if acceptable?(name, result),
          do: {failures, outcomes},
          else: {[{i, name, args, result} | failures], outcomes}
      end)

    failures = Enum.reverse(failures)

    IO.puts(
      "\nfuzz: seed #{seed}, #{count} calls in #{System.monotonic_time(:millisecond) - started} ms, " <>
        "#{Tether.info().spawned - spawned} OS processes, outcomes #{inspect(outcomes)}"
    )

    kinds =
      failures
      |> Enum.frequencies_by(fn {_, name, _, result} -> {name, outcome(result)} end)
      |> Enum.map_join(", ", fn {{name, outcome}, n} -> "#{name} #{inspect(outcome)} ×#{n}" end)

    assert failures == [],
           "#{length(failures)} unacceptable results (seed #{seed}; #{replay}): #{kinds}; " <>
             "the first:\n" <> Enum.map_join(Enum.take(failures, 8), "\n", &describe/1)

    # Everything the fuzzer started was `true` or a random-option variant of it: it all ends.
    assert wait_until(fn -> Tether.which_processes() -- context.os_pids == [] end, 20_000),
           "still running: #{inspect(Tether.which_processes() -- context.os_pids)} (#{replay})"

    # And nothing is counted that does not run: a child stuck draining output that no one
    # will take (a Tether.Daemon with a passive stream did) holds a max_children slot forever.
    assert wait_until(fn -> Tether.info().live == length(Tether.which_processes()) end, 20_000),
           "counted but not running: #{Tether.info().live} live, " <>
             "#{length(Tether.which_processes())} running (#{replay})"

    flush_mailbox()
    seed
  end

  defp outcome({:ok, {:error, _}}), do: :error
  defp outcome({:ok, _}), do: :ok
  defp outcome({:raised, %module{}}), do: module
  defp outcome(other) when is_tuple(other), do: elem(other, 0)
  defp outcome(other), do: other

  defp describe({i, name, args, result}) do
    options = [limit: 6, printable_limit: 60]

    "  call #{i}: #{name}(#{Enum.map_join(args, ", ", &inspect(&1, options))}) -> " <>
      inspect(result, options)
  end

  defp flush_mailbox do
    receive do
      _ -> flush_mailbox()
    after
      0 -> :ok
    end
  end

  defp default_calls(context),
    do: tether_calls(context) ++ native_calls(context) ++ exec_calls_passing(context)

  test "20,000 random calls of every Tether function: no crash, no hang, every failure a clear error",
       %{context: context} do
    fuzz(context, default_calls(context), count(20_000))
  end

  @tag :stress
  test "200,000 random calls", %{context: context} do
    fuzz(context, default_calls(context), count(200_000))
  end

  # The :exec cases carry their own tag (`mix test --only exec_fuzz` runs them alone).
  describe ":exec" do
    @describetag :exec_fuzz

    # Found by this fuzzer and issue #14: each raised something other than ArgumentError.
    @crashing [
      {:debug, [-1]},
      {:debug, [:x]},
      {:pty_opts, [1, :x]},
      {:pty_opts, [1, [{:winsz, {1, 2}} | :x]]},
      {:pid, [:x]},
      {:ospid, [:x]},
      {:status, [:x]},
      {:signal, [:x]},
      {:signal_to_int, [15]},
      {:manage, [:x, []]},
      # 2 ** 40 is no process (pid_max is at most 2 ** 22): the options crash first.
      {:manage, [2 ** 40, [:monitor | :x]]},
      {:child_spec, [[{:x, 1} | :x]]},
      {:ospid, [[1]]},
      {:status, [1.5]},
      {:signal, ["15"]},
      {:signal_to_int, [:sigbogus]},
      {:pid, [~c"1"]},
      {:send, [1, :x]},
      {:send, [:x, "data"]},
      {:run, [~c"true", [], :x]},
      {:run, [~c"true", [], -1]},
      {:run, [~c"true", [{:user, <<248, 186, 142>>}]]},
      {:stop_and_wait, [1, -1]},
      {:stop_and_wait, [1, 2 ** 40]},
      {:start, [74]},
      {:start_link, [[:root | :x]]}
    ]

    test "known crashing inputs raise ArgumentError or return {:error, _}" do
      results =
        for {fun, args} <- @crashing do
          {fun, args, call(&apply(:exec, fun, &1), args)}
        end

      bad =
        for {fun, args, result} <- results,
            not match?({:raised, %ArgumentError{}}, result) and
              not match?({:ok, {:error, _}}, result),
            do: "  :exec.#{fun}(#{Enum.map_join(args, ", ", &inspect/1)}) -> #{inspect(result)}"

      assert bad == [],
             "#{length(bad)} of #{length(@crashing)} still crash:\n" <> Enum.join(bad, "\n")
    end

    # A refused call signals nothing (Tether's Refusals): the timeout is checked first.
    test "stop_and_wait/2 with a bad timeout raises ArgumentError and leaves the process alone" do
      {:ok, pid, os_pid} = :exec.run(["sleep", "100"], [:monitor])

      for timeout <- [:soon, -1, 2 ** 40] do
        assert {:raised, %ArgumentError{message: message}} =
                 call(&apply(:exec, :stop_and_wait, &1), [pid, timeout])

        assert message =~ "invalid timeout: #{inspect(timeout)}"
      end

      assert Tether.status(os_pid) == {:status, :running}
      assert :exec.stop_and_wait(pid, 5000) == :normal
      assert Tether.status(os_pid) == {:error, :no_process}
    end

    test "run/3 whose start outlasts its timeout answers {error, timeout} and leaves nothing" do
      :exec.which_children()
      before = Tether.which_processes()
      spawned = Tether.info().spawned
      assert :exec.run(~c"sleep 100", [:monitor], 0) == {:error, :timeout}
      # The start goes on without the caller, and what it started is stopped at once.
      assert wait_until(fn -> Tether.info().spawned == spawned + 1 end)
      assert wait_until(fn -> Tether.which_processes() -- before == [] end)
      assert :exec.which_children() -- before == []
      refute_received {:DOWN, _, :process, _, _}
    end

    test "5,000 random calls of every :exec function", %{context: context} do
      fuzz(context, exec_calls(context), count(5_000))
    end
  end
end

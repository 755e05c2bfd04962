defmodule Tether.FuzzTest do
  # Random terms against every public function and the raw NIF functions. A call may return a
  # documented value, an {:error, atom}, or raise ArgumentError; anything else, a hang or a VM
  # crash is a failure. Not async: it counts live children at the end.
  use ExUnit.Case, async: false
  import Tether.OsHelpers
  alias Tether.TermGenerator, as: Gen

  @moduletag timeout: 600_000

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

    on_exit(fn ->
      Tether.kill(live, :sigkill)
      Process.exit(live_pid, :kill)
    end)

    %{
      context: %{os_pids: [live, dead, 1, 0, -1, 2 ** 40], dead_pid: dead_pid, live_pid: live_pid}
    }
  end

  defp calls(context) do
    [
      {:run, fn -> Tether.run(Gen.command(context), Gen.safe_options(Gen.options(context))) end},
      {:stop, fn -> Tether.stop(Gen.term(context)) end},
      {:kill, fn -> Tether.kill(Gen.term(context), Gen.term(context)) end},
      {:status, fn -> Tether.status(Gen.term(context)) end},
      {:pid, fn -> Tether.pid(Gen.term(context)) end},
      {:os_pid, fn -> Tether.os_pid(Gen.term(context)) end},
      {:signal_number, fn -> Tether.signal_number(Gen.term(context)) end},
      {:native_stop, fn -> Tether.Native.stop(Gen.term(context)) end},
      {:native_kill, fn -> Tether.Native.kill(Gen.term(context), Gen.term(context)) end},
      {:native_status, fn -> Tether.Native.status(Gen.term(context)) end},
      {:native_process_of, fn -> Tether.Native.process_of(Gen.term(context)) end},
      {:native_signal_number, fn -> Tether.Native.signal_number(Gen.term(context)) end},
      {:native_start,
       fn ->
         Tether.Native.start(
           native_spec(context),
           Gen.term(context),
           Gen.term(context),
           Gen.term(context)
         )
       end},
      {:native_stop_all, fn -> Tether.Native.stop_all(not_a_pid(context)) end},
      {:send, fn -> Tether.send(Gen.term(context), Gen.term(context)) end},
      {:winsz, fn -> Tether.winsz(Gen.term(context), Gen.term(context), Gen.term(context)) end},
      {:native_write, fn -> Tether.Native.write(Gen.term(context), Gen.term(context)) end},
      {:native_close_stdin, fn -> Tether.Native.close_stdin(Gen.term(context)) end},
      {:native_winsz,
       fn -> Tether.Native.winsz(Gen.term(context), Gen.term(context), Gen.term(context)) end},
      {:exec_run,
       fn -> :exec.run(exec_command(context), Gen.safe_options(Gen.options(context))) end},
      {:exec_stop, fn -> :exec.stop(Gen.term(context)) end},
      {:exec_kill, fn -> :exec.kill(Gen.term(context), Gen.term(context)) end}
    ]
  end

  # Either garbage or a well-formed spec with random field values, always running `true`.
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
        group: Enum.random([:new, :inherit, Gen.term(context, 0)]),
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

  defp acceptable?(name, {:ok, result}), do: acceptable_result?(name, result)
  defp acceptable?(_name, {:raised, %ArgumentError{}}), do: true
  defp acceptable?(_name, _), do: false

  defp acceptable_result?(name, {:ok, pid, os_pid}) when name in [:run, :exec_run],
    do: is_pid(pid) and is_integer(os_pid)

  defp acceptable_result?(name, {:ok, output}) when name in [:run, :exec_run], do: is_list(output)

  defp acceptable_result?(name, {:error, output})
       when name in [:run, :exec_run] and is_list(output),
       do: true

  # :exec answers with erlexec's error terms: the bad option itself, or erlexec's strings.
  defp acceptable_result?(name, {:error, reason})
       when name in [:exec_run, :exec_stop, :exec_kill],
       do: erlexec_error?(reason)

  defp acceptable_result?(:native_start, ref), do: is_reference(ref)
  defp acceptable_result?(_, {:error, reason}), do: is_atom(reason)
  defp acceptable_result?(_, :ok), do: true
  defp acceptable_result?(_, {:status, s}), do: s in [:running, :stopping, :stopped]
  defp acceptable_result?(_, {:ok, value}), do: is_pid(value) or is_integer(value)
  defp acceptable_result?(:signal_number, n), do: is_integer(n)
  defp acceptable_result?(:native_signal_number, n), do: is_integer(n) or is_nil(n)
  defp acceptable_result?(_, _), do: false

  defp erlexec_error?(reason) when is_atom(reason), do: true

  defp erlexec_error?({tag, _})
       when tag in [:invalid_option, :invalid_env_value, :invalid_pty_value, :invalid_command],
       do: true

  defp erlexec_error?(message), do: is_binary(message) or :io_lib.printable_unicode_list(message)

  # Each call runs in its own process with a deadline: a hang fails the test.
  defp call(fun) do
    task = Task.async(fn -> try do: {:ok, fun.()}, rescue: (e -> {:raised, e}) end)

    case Task.yield(task, 5000) || Task.shutdown(task, :brutal_kill) do
      {:ok, result} -> result
      nil -> :hang
      {:exit, reason} -> {:exit, reason}
    end
  end

  defp fuzz(context, count) do
    calls = calls(context)

    failures =
      Enum.reduce(1..count, [], fn i, failures ->
        {name, fun} = Enum.random(calls)
        result = call(fun)
        if rem(i, 500) == 0, do: flush_mailbox()
        if acceptable?(name, result), do: failures, else: [{name, result} | failures]
      end)

    assert failures == [], "unacceptable results: #{inspect(Enum.take(failures, 5), limit: 8)}"
    # Everything the fuzzer started was `true` or a random-option variant of it: it all ends.
    assert wait_until(fn -> Tether.which_processes() -- context.os_pids == [] end, 20_000)
    flush_mailbox()
  end

  defp flush_mailbox do
    receive do
      _ -> flush_mailbox()
    after
      0 -> :ok
    end
  end

  test "5,000 random calls: no crash, no hang, every failure a clear error", %{context: context} do
    :rand.seed(:exsss, {1, 2, System.unique_integer([:positive])})
    fuzz(context, 5_000)
  end

  @tag :stress
  test "100,000 random calls", %{context: context} do
    fuzz(context, 100_000)
  end
end

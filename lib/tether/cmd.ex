defmodule Tether.Cmd do
  @moduledoc false
  # `Tether.cmd/3`: `System.cmd/3`'s shape over `Tether.run/2`.

  @doc false
  @spec cmd(binary, [binary], keyword) :: {Collectable.t(), non_neg_integer | :timeout}
  def cmd(command, args, options)
      when is_binary(command) and is_list(args) and is_list(options) do
    cmd = Tether.Options.validate(:cmd, options)

    # On another node the program is searched on that node's PATH.
    remote? = Keyword.get(cmd.run, :node, node()) != node()

    program =
      cond do
        remote? or String.contains?(command, "/") -> command
        true -> System.find_executable(command) || raise(ErlangError, original: :enoent)
      end

    argv = [cmd.arg0 || command | args]

    run_options =
      [
        :stdout,
        :monitor,
        executable: program,
        stderr: if(cmd.stderr_to_stdout, do: :stdout, else: :inherit)
      ] ++
        if(cmd.input, do: [:stdin], else: []) ++ cmd.run

    # Before the spawn: a collectable that cannot be opened leaves no process behind.
    {acc, collector} = Collectable.into(cmd.into)

    {:ok, _pid, os_pid} =
      case Tether.Run.run(argv, run_options) do
        {:ok, _, _} = ok ->
          ok

        {:error, reason} ->
          collector.(acc, :halt)
          raise ErlangError, original: reason
      end

    if cmd.input, do: Tether.Stream.feed(os_pid, cmd.input)
    deadline = Tether.Sync.deadline(cmd.timeout)
    # Only stdout comes here: stderr goes to the VM's stderr, or to stdout.
    collect = fn acc, :stdout, data -> collector.(acc, {:cont, data}) end

    case Tether.Sync.collect(os_pid, deadline, acc, collect) do
      {:down, reason, acc} -> {collector.(acc, :done), exit_code(reason)}
      {:timeout, acc} -> {collector.(acc, :done), :timeout}
    end
  end

  def cmd(command, args, options) do
    raise ArgumentError,
          "Tether.cmd/3 expects a program (string), a list of string arguments and a " <>
            "keyword list of options, got: #{inspect(command)}, #{inspect(args)}, " <>
            inspect(options)
  end

  defp exit_code(:normal), do: 0
  defp exit_code({:exit_status, code}), do: code
  defp exit_code({:signal, signal, _}), do: 128 + Tether.Signal.number!(signal)
  defp exit_code(_), do: 255
end

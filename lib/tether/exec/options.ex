defmodule Tether.Exec.Options do
  @moduledoc """
  Translates erlexec's commands and run options (Erlang forms: charlists, `{env, ["N=V"]}`,
  `{stdout, File, Opts}`, …) into `Tether.run/2` arguments. Options Tether has no use for
  (`debug`, `verbose`) are accepted and ignored; anything else unknown is an error, as in
  erlexec.
  """

  @doc """
  The Tether command for an erlexec command: a string (charlist or binary) runs through
  `/bin/sh -c`; a list of strings runs directly.

      iex> Tether.Exec.Options.command(~c"echo hi")
      "echo hi"
      iex> Tether.Exec.Options.command([~c"ls", "-l"])
      ["ls", "-l"]
  """
  @spec command(term) :: Tether.command()
  def command(command) when is_binary(command), do: command

  def command([first | _] = command) when is_integer(first) do
    string!(command, "command")
  end

  def command([_ | _] = command) do
    proper_list!(command, "command")
    Enum.map(command, &string!(&1, "command argument"))
  end

  def command(other), do: raise(ArgumentError, "invalid command: #{inspect(other)}")

  @doc """
  Tether options for erlexec options, run by `caller`. Returns `{tether_options, flags}`
  where flags are what the `:exec` layer handles itself (`:sync`, `:link`, `:monitor`).

      iex> Tether.Exec.Options.translate([:monitor, {:env, [~c"A=1"]}, {:kill_timeout, 2}], self())
      {[env: [{"A", "1"}], kill_timeout: 2], %{monitor: true, link: false, sync: false}}
  """
  @spec translate(list, pid) :: {keyword, map}
  def translate(options, caller) when is_list(options) do
    proper_list!(options, "options")

    Enum.reduce(options, {[], %{monitor: false, link: false, sync: false}}, fn option,
                                                                               {acc, flags} ->
      case option(option, caller) do
        {:flag, flag} -> {acc, Map.put(flags, flag, true)}
        :ignore -> {acc, flags}
        tether -> {acc ++ List.wrap(tether), flags}
      end
    end)
  end

  def translate(options, _caller),
    do: raise(ArgumentError, "invalid options: #{inspect(options)}")

  defp option(flag, _caller) when flag in [:monitor, :link, :sync], do: {:flag, flag}
  defp option(flag, _caller) when flag in [:debug, :verbose], do: :ignore
  defp option({:debug, _}, _caller), do: :ignore
  defp option(:stdin, _caller), do: :stdin
  defp option({:stdin, :null}, _caller), do: {:stdin, :null}
  defp option({:stdin, :close}, _caller), do: {:stdin, :close}
  defp option({:stdin, true}, _caller), do: :stdin
  defp option({:stdin, file}, _caller), do: {:stdin, string!(file, "stdin")}
  defp option(stream, caller) when stream in [:stdout, :stderr], do: {stream, caller}

  defp option({stream, device}, caller) when stream in [:stdout, :stderr],
    do: {stream, device(device, caller)}

  defp option({stream, file, file_options}, _caller) when stream in [:stdout, :stderr] do
    {stream, {string!(file, Atom.to_string(stream)), file_options}}
  end

  defp option({:env, env}, _caller) when is_list(env) do
    proper_list!(env, "env")
    {:env, Enum.map(env, &env_entry/1)}
  end

  defp option({:cd, dir}, _caller), do: {:cd, string!(dir, "cd")}
  defp option({:executable, exe}, _caller), do: {:executable, string!(exe, "executable")}
  defp option({:kill, command}, _caller), do: {:kill, string!(command, "kill")}
  defp option({:kill_timeout, seconds}, _caller), do: {:kill_timeout, seconds}
  defp option(:kill_group, _caller), do: {:kill_group, true}
  defp option({:group, gid}, _caller), do: {:group, gid}
  defp option({:user, user}, _caller), do: {:user, string!(user, "user")}
  defp option({:nice, n}, _caller), do: {:nice, n}
  defp option({:success_exit_code, code}, _caller), do: {:success_exit_code, code}
  defp option(:pty, _caller), do: :pty
  defp option({:pty, _terminal_options}, _caller), do: :pty
  defp option(:pty_echo, _caller), do: :pty_echo
  defp option({:winsz, size}, _caller), do: {:winsz, size}
  defp option(other, _caller), do: raise(ArgumentError, "invalid exec option: #{inspect(other)}")

  defp device(:stdout, _caller), do: :stdout
  defp device(:stderr, _caller), do: :stderr
  defp device(:null, _caller), do: :null
  defp device(:close, _caller), do: :close
  defp device(:print, _caller), do: :print
  defp device(true, caller), do: caller
  defp device({:send, pid}, _caller), do: {:send, pid}
  defp device(pid, _caller) when is_pid(pid), do: pid
  defp device(fun, _caller) when is_function(fun, 3), do: fun

  defp device(file, _caller) when is_binary(file) or is_list(file),
    do: string!(file, "output file")

  defp device(other, _caller),
    do: raise(ArgumentError, "invalid output device: #{inspect(other)}")

  # "N=V" (split at the first "="), {N, V}, {N, false} and clear.
  defp env_entry(:clear), do: :clear
  defp env_entry({name, false}), do: {string!(name, "env name"), false}
  defp env_entry({name, value}), do: {string!(name, "env name"), string!(value, "env value")}

  defp env_entry(entry) do
    case String.split(string!(entry, "env entry"), "=", parts: 2) do
      [name, value] when name != "" -> {name, value}
      _ -> raise ArgumentError, "invalid env entry: #{inspect(entry)} (expected \"NAME=VALUE\")"
    end
  end

  defp proper_list!(list, what) do
    length(list)
  rescue
    ArgumentError ->
      reraise ArgumentError, [message: "invalid #{what}: #{inspect(list)}"], __STACKTRACE__
  end

  defp string!(value, _what) when is_binary(value), do: value

  defp string!(value, _what) when is_atom(value) and value not in [nil, true, false],
    do: Atom.to_string(value)

  defp string!(value, what) when is_list(value) do
    List.to_string(value)
  rescue
    _ -> raise ArgumentError, "invalid #{what}: #{inspect(value)}"
  end

  defp string!(value, what), do: raise(ArgumentError, "invalid #{what}: #{inspect(value)}")
end

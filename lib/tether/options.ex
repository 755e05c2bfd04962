defmodule Tether.Options do
  @moduledoc """
  Validates and normalises the command and options of `Tether.run/2`: the one place where
  options are checked. Bad input raises `ArgumentError` naming the option; what comes out is a
  spec of typed values that the NIF decodes without further checks.
  """

  @typedoc "The normalised spec handed to the NIF."
  @type spec :: %{
          argv: [binary],
          executable: binary | nil,
          env: [{binary, binary | nil} | :clear],
          cd: binary | nil,
          stdout: pid | nil,
          stderr: pid | nil,
          monitor: pid | nil,
          kill_timeout_ms: non_neg_integer,
          kill_group: boolean,
          detach: boolean
        }

  @default_kill_timeout 5

  @doc """
  Builds the spec for `command` and `options`, as run by `caller`.

      iex> spec = Tether.Options.build!(["echo", "hi"], [:stdout, kill_timeout: 2], self())
      iex> {spec.argv, spec.stdout == self(), spec.kill_timeout_ms}
      {["echo", "hi"], true, 2000}

      iex> Tether.Options.build!("echo hi", [], self()).argv
      ["/bin/sh", "-c", "echo hi"]

      iex> Tether.Options.build!(["true"], [colour: :blue], self())
      ** (ArgumentError) unknown option :colour in Tether.run/2 options
  """
  @spec build!(Tether.command(), Tether.options(), pid) :: spec
  def build!(command, options, caller) when is_list(options) do
    proper_list?(options) or
      raise ArgumentError, "Tether.run/2 options must be a proper list, got: #{inspect(options)}"

    base = %{
      argv: argv!(command),
      executable: nil,
      env: [],
      cd: nil,
      stdout: nil,
      stderr: nil,
      monitor: nil,
      kill_timeout_ms: seconds_to_ms!(@default_kill_timeout),
      kill_group: true,
      detach: false
    }

    Enum.reduce(options, base, &option!(&1, &2, caller))
  end

  def build!(_command, options, _caller) do
    raise ArgumentError, "Tether.run/2 options must be a list, got: #{inspect(options)}"
  end

  defp argv!(command) when is_binary(command) do
    argv!(["/bin/sh", "-c", command])
  end

  defp argv!([program | _] = argv) do
    proper_list?(argv) or
      raise ArgumentError, "command must be a proper list, got: #{inspect(argv)}"

    Enum.each(argv, fn arg ->
      is_binary(arg) or
        raise ArgumentError,
              "command arguments must be strings, got: #{inspect(arg)} in #{inspect(argv)}"

      c_string!(arg, "command argument")
    end)

    program != "" or raise ArgumentError, "the program name must not be empty"
    argv
  end

  defp argv!(command) do
    raise ArgumentError,
          "command must be a string (run by /bin/sh -c) or a non-empty list of strings, " <>
            "got: #{inspect(command)}"
  end

  defp option!(:monitor, spec, caller), do: %{spec | monitor: caller}
  defp option!({:monitor, true}, spec, caller), do: %{spec | monitor: caller}
  defp option!({:monitor, false}, spec, _caller), do: %{spec | monitor: nil}
  defp option!(:stdout, spec, caller), do: %{spec | stdout: caller}
  defp option!(:stderr, spec, caller), do: %{spec | stderr: caller}

  defp option!({stream, destination}, spec, _caller) when stream in [:stdout, :stderr] do
    Map.put(spec, stream, destination!(stream, destination))
  end

  defp option!({:env, env}, spec, _caller), do: %{spec | env: env!(env)}
  defp option!({:cd, dir}, spec, _caller), do: %{spec | cd: path!(dir, :cd)}

  defp option!({:kill_timeout, seconds}, spec, _caller) do
    %{spec | kill_timeout_ms: seconds_to_ms!(seconds)}
  end

  defp option!({:kill_group, flag}, spec, _caller) when is_boolean(flag) do
    %{spec | kill_group: flag}
  end

  defp option!(:kill_group, spec, _caller), do: %{spec | kill_group: true}
  defp option!(:detach, spec, _caller), do: %{spec | detach: true}
  # erlexec's {:group, 0}: a new group led by the child, which is the default.
  defp option!({:group, 0}, spec, _caller), do: %{spec | kill_group: true}

  defp option!({:detach, flag}, spec, _caller) when is_boolean(flag) do
    %{spec | detach: flag}
  end

  defp option!({:executable, path}, spec, _caller) do
    %{spec | executable: path!(path, :executable)}
  end

  defp option!({key, value}, _spec, _caller)
       when key in [:monitor, :kill_group, :detach] do
    raise ArgumentError, "invalid value for #{inspect(key)} option: #{inspect(value)}"
  end

  defp option!({key, _value}, _spec, _caller) when is_atom(key) do
    raise ArgumentError, "unknown option #{inspect(key)} in Tether.run/2 options"
  end

  defp option!(key, _spec, _caller) when is_atom(key) do
    raise ArgumentError, "unknown option #{inspect(key)} in Tether.run/2 options"
  end

  defp option!(other, _spec, _caller) do
    raise ArgumentError,
          "invalid entry #{inspect(other)} in Tether.run/2 options " <>
            "(expected an atom or a {key, value} tuple)"
  end

  defp destination!(_stream, pid) when is_pid(pid) and node(pid) == node(), do: pid
  defp destination!(_stream, {:send, pid}) when is_pid(pid) and node(pid) == node(), do: pid
  defp destination!(_stream, :null), do: nil

  defp destination!(stream, other) do
    raise ArgumentError,
          "invalid value for #{inspect(stream)} option: #{inspect(other)} " <>
            "(expected a local pid, {:send, pid} or :null)"
  end

  defp env!(env) when (is_list(env) and env != []) or is_map(env) do
    is_map(env) or proper_list?(env) or
      raise ArgumentError, "invalid value for :env option: #{inspect(env)} (expected a list)"

    Enum.map(env, fn
      :clear ->
        :clear

      {name, value} ->
        name = env_string!(name, "name")

        (name != "" and not String.contains?(name, "=")) or
          raise ArgumentError, "invalid name in :env option: #{inspect(name)}"

        case value do
          v when v in [false, nil] -> {name, nil}
          v -> {name, env_string!(v, "value")}
        end

      other ->
        raise ArgumentError,
              "invalid entry in :env option: #{inspect(other)} " <>
                "(expected {name, value}, {name, false} or :clear)"
    end)
  end

  defp env!([]), do: []

  defp env!(other) do
    raise ArgumentError, "invalid value for :env option: #{inspect(other)} (expected a list)"
  end

  defp env_string!(value, what) when is_binary(value), do: c_string!(value, "#{what} in :env")
  defp env_string!(value, what) when is_atom(value), do: env_string!(Atom.to_string(value), what)

  defp env_string!(value, what) when is_list(value) do
    value |> chardata!("invalid #{what} option") |> env_string!(what)
  end

  defp env_string!(value, what) do
    raise ArgumentError, "invalid #{what} option: #{inspect(value)} (expected a string)"
  end

  defp path!(path, key) when is_binary(path) and path != "",
    do: c_string!(path, "#{inspect(key)} option")

  defp path!(path, key) when is_list(path) and path != [] do
    path |> chardata!("invalid value for #{inspect(key)} option") |> path!(key)
  end

  defp path!(path, key) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option: #{inspect(path)} (expected a non-empty path)"
  end

  # 2^32 ms, about 49 days: beyond that a timeout is a mistake, and it must fit the NIF's u64.
  @max_timeout_seconds 4_294_967

  defp seconds_to_ms!(seconds)
       when is_number(seconds) and seconds >= 0 and seconds <= @max_timeout_seconds,
       do: round(seconds * 1000)

  defp seconds_to_ms!(other) do
    raise ArgumentError,
          "invalid value for :kill_timeout option: #{inspect(other)} " <>
            "(expected seconds from 0 to #{@max_timeout_seconds})"
  end

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  defp chardata!(chardata, message) do
    IO.chardata_to_string(chardata)
  rescue
    _ in [ArgumentError, UnicodeConversionError] ->
      reraise ArgumentError, [message: "#{message}: #{inspect(chardata)}"], __STACKTRACE__
  end

  defp c_string!(value, what) do
    String.contains?(value, <<0>>) and
      raise ArgumentError, "#{what} contains a NUL byte: #{inspect(value)}"

    value
  end
end

defmodule Tether.Config do
  @moduledoc """
  Tether's configuration, read once when the application starts:

      config :tether,
        max_children: 10_000,     # past it, run/2 returns {:error, :max_children}
        kill_timeout: 5,          # seconds; the default of every run's :kill_timeout
        debug: false,             # true (= :debug) or a Logger level: trace spawns, exits, signals, stops
        watchdog_path: nil,       # the tether_watchdog program (default: the one in priv/native);
                                  # read when the application first starts in a VM
        pipe_size: 1_048_576,     # bytes asked for each output pipe (0: the kernel's default)
        read_chunk: 1_048_576,    # the largest chunk read at once, so the largest message
        busy_poll_us: 50,         # after pipe traffic, the native loop polls this long before it
                                  # sleeps (0..10_000; 0: never): CPU for lower latency
        cgroups: :auto,           # a cgroup v2 per child: :auto (where the hierarchy is
                                  # writable), true (or the application fails to start), false
        spawner: true,            # clone children from a small spawner process (flat cost
                                  # with thousands live, exact max_rss); false: from the VM
        cgroup_root: nil          # the cgroup2 directory to make them in (default: the VM's own
                                  # cgroup); each VM uses <root>/tether-<os_pid>

  `Tether.info/0` tells whether cgroups are in use and, if not, why.

  A bad value fails the application start with a message naming the key and the accepted
  values. For migration, the `config :erlexec` keys that map are honoured (`max_children`,
  `debug`, `port_path` as `watchdog_path`) when `:tether` does not set them; other `:erlexec`
  keys are ignored with one warning.
  """

  require Logger

  @defaults [
    max_children: 10_000,
    kill_timeout: 5,
    debug: false,
    watchdog_path: nil,
    pipe_size: 1_048_576,
    read_chunk: 1_048_576,
    busy_poll_us: 50,
    cgroups: :auto,
    spawner: true,
    cgroup_root: nil
  ]

  @levels [:debug, :info, :notice, :warning, :error]
  @key {__MODULE__, :config}

  @doc "Reads, validates and stores the configuration. Returns `{:error, message}` on a bad value."
  @spec load() :: {:ok, map} | {:error, String.t()}
  def load do
    tether = Application.get_all_env(:tether)
    erlexec = from_erlexec(Application.get_all_env(:erlexec))

    config =
      @defaults
      |> Keyword.merge(erlexec)
      |> Keyword.merge(Keyword.take(tether, Keyword.keys(@defaults)))

    with :ok <- validate(config) do
      config = config |> Map.new() |> Map.update!(:debug, &level/1)
      :persistent_term.put(@key, config)
      {:ok, config}
    end
  end

  @doc "One configuration value (the default before the application has started)."
  @spec get(atom) :: term
  def get(key) do
    case :persistent_term.get(@key, nil) do
      nil -> Keyword.fetch!(@defaults, key)
      config -> Map.fetch!(config, key)
    end
  end

  @doc "The Logger level of debug traces, or `nil` when tracing is off."
  @spec trace_level() :: Logger.level() | nil
  def trace_level, do: get(:debug)

  @doc "The watchdog program to use: the configured one, else `native_dir/tether_watchdog`."
  @spec watchdog_path(Path.t()) :: Path.t() | nil
  def watchdog_path(native_dir) do
    path =
      Application.get_env(:tether, :watchdog_path) ||
        erlexec_port_path() ||
        Path.join(native_dir, "tether_watchdog")

    if File.regular?(path), do: path
  end

  @doc """
  The spawner program to clone children from: `native_dir/tether_spawner` unless `spawner:
  false` is configured or the program is missing; else `nil` (children are cloned from the VM).
  """
  @spec spawner_path(Path.t()) :: Path.t() | nil
  def spawner_path(native_dir) do
    path = Path.join(native_dir, "tether_spawner")
    if Application.get_env(:tether, :spawner, true) == true and File.regular?(path), do: path
  end

  defp erlexec_port_path do
    case Application.get_env(:erlexec, :port_path) do
      path when is_binary(path) or is_list(path) -> IO.chardata_to_string(path)
      _ -> nil
    end
  end

  defp from_erlexec([]), do: []

  defp from_erlexec(erlexec) do
    {mapped, ignored} = Keyword.split(erlexec, [:max_children, :debug, :port_path])

    if ignored != [] do
      Logger.warning(
        "Tether ignores these config :erlexec keys: #{inspect(Keyword.keys(ignored))}"
      )
    end

    Enum.map(mapped, fn
      {:port_path, path} -> {:watchdog_path, path}
      {:debug, level} when is_integer(level) -> {:debug, level > 0}
      other -> other
    end)
  end

  defp validate(config) do
    Enum.find_value(config, :ok, fn {key, value} ->
      if valid?(key, value), do: nil, else: {:error, message(key, value)}
    end)
  end

  defp valid?(:max_children, n), do: is_integer(n) and n > 0
  defp valid?(:kill_timeout, s), do: is_number(s) and s >= 0 and s <= 4_294_967
  defp valid?(:debug, level), do: is_boolean(level) or level in @levels
  defp valid?(:watchdog_path, nil), do: true

  defp valid?(:watchdog_path, path),
    do: (is_binary(path) or is_list(path)) and File.regular?(IO.chardata_to_string(path))

  defp valid?(:pipe_size, n), do: is_integer(n) and n >= 0 and n <= 64 * 1024 * 1024
  defp valid?(:read_chunk, n), do: is_integer(n) and n >= 1024 and n <= 16 * 1024 * 1024
  defp valid?(:busy_poll_us, n), do: is_integer(n) and n >= 0 and n <= 10_000
  defp valid?(:cgroups, mode), do: mode in [:auto, true, false]
  defp valid?(:spawner, on), do: is_boolean(on)

  defp valid?(:cgroup_root, path),
    do: is_nil(path) or (is_binary(path) and Path.type(path) == :absolute)

  defp message(key, value) do
    accepted =
      case key do
        :max_children -> "a positive integer"
        :kill_timeout -> "seconds from 0 to 4294967"
        :debug -> "false, true or a Logger level (#{Enum.map_join(@levels, ", ", &inspect/1)})"
        :watchdog_path -> "nil or the path of an existing file"
        :pipe_size -> "bytes from 0 to 67108864"
        :read_chunk -> "bytes from 1024 to 16777216"
        :busy_poll_us -> "microseconds from 0 to 10000"
        :cgroups -> ":auto, true or false"
        :spawner -> "true or false"
        :cgroup_root -> "nil or the absolute path of a cgroup2 directory"
      end

    "invalid value for config :tether, #{inspect(key)}: #{inspect(value)} (expected #{accepted})"
  end

  defp level(false), do: nil
  defp level(true), do: :debug
  defp level(level), do: level
end

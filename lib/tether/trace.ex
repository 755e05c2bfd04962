defmodule Tether.Trace do
  @moduledoc false
  # Debug traces of spawns, exits, signals and stops (`config :tether, debug: true | level`),
  # with `os_pid` Logger metadata. Off, a trace costs one persistent_term read: the message is
  # a fun, built only when the trace is on.
  require Logger

  @spec event(Tether.os_pid() | nil, (() -> String.t())) :: :ok
  def event(os_pid, message) do
    case Tether.Config.trace_level() do
      nil -> :ok
      level -> Logger.log(level, message, os_pid: os_pid)
    end
  end
end

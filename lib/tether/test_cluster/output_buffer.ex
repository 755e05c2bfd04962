defmodule Tether.TestCluster.OutputBuffer do
  @moduledoc """
  A node's output: split into lines, kept as the last `max_lines` lines, and logged at debug
  level with a `[name:stream]` prefix at no more than `max_log_rate` lines per second (the
  rest are counted and reported once the second is over).
  """

  require Logger

  defstruct name: nil,
            lines: :queue.new(),
            count: 0,
            max_lines: 1000,
            partial: %{stdout: "", stderr: ""},
            max_log_rate: 200,
            window: 0,
            logged: 0,
            suppressed: 0

  @type t :: %__MODULE__{
          name: atom,
          lines: :queue.queue({:stdout | :stderr, binary}),
          count: non_neg_integer,
          max_lines: pos_integer,
          partial: %{stdout: binary, stderr: binary},
          max_log_rate: pos_integer,
          window: integer,
          logged: non_neg_integer,
          suppressed: non_neg_integer
        }

  @doc "A buffer for node `name`."
  @spec new(atom, [{:max_lines, pos_integer} | {:max_log_rate, pos_integer}]) :: t
  def new(name, options \\ []) do
    struct!(__MODULE__, [name: name] ++ Keyword.take(options, [:max_lines, :max_log_rate]))
  end

  @doc """
  Adds a chunk of `stream` output; complete lines are kept and logged.

      iex> buffer = Tether.TestCluster.OutputBuffer.new(:n1, max_lines: 2)
      iex> buffer = Tether.TestCluster.OutputBuffer.add(buffer, :stdout, "a\\nb\\nc")
      iex> buffer = Tether.TestCluster.OutputBuffer.add(buffer, :stdout, "d\\n")
      iex> Tether.TestCluster.OutputBuffer.lines(buffer)
      [{:stdout, "b"}, {:stdout, "cd"}]
  """
  @spec add(t, :stdout | :stderr, binary) :: t
  def add(buffer, stream, data) do
    {complete, rest} = Tether.Lines.split(buffer.partial[stream], data)
    buffer = %{buffer | partial: Map.put(buffer.partial, stream, rest)}
    Enum.reduce(complete, buffer, &push(&2, stream, &1))
  end

  @doc "The kept lines, oldest first, as `{stream, line}`."
  @spec lines(t) :: [{:stdout | :stderr, binary}]
  def lines(buffer), do: :queue.to_list(buffer.lines)

  defp push(buffer, stream, line) do
    buffer = log(buffer, stream, line)
    lines = :queue.in({stream, line}, buffer.lines)

    if buffer.count >= buffer.max_lines do
      %{buffer | lines: :queue.drop(lines)}
    else
      %{buffer | lines: lines, count: buffer.count + 1}
    end
  end

  defp log(buffer, stream, line) do
    second = System.monotonic_time(:second)

    buffer =
      if second != buffer.window do
        if buffer.suppressed > 0 do
          Logger.debug(
            "[#{buffer.name}] #{buffer.suppressed} output lines not logged (rate limit)"
          )
        end

        %{buffer | window: second, logged: 0, suppressed: 0}
      else
        buffer
      end

    if buffer.logged < buffer.max_log_rate do
      Logger.debug("[#{buffer.name}:#{stream}] #{line}")
      %{buffer | logged: buffer.logged + 1}
    else
      %{buffer | suppressed: buffer.suppressed + 1}
    end
  end
end

defmodule Tether.Lines do
  @moduledoc false
  # Output chunks to lines: what `Tether.Daemon` logs (and TestCluster's output buffer keeps).

  @doc false
  # The complete lines of `partial <> data`, in order and without their "\n", and the partial
  # line left after the last "\n" ("" when `data` ends a line).
  #
  #     iex> Tether.Lines.split("he", "llo\nwor")
  #     {["hello"], "wor"}
  @spec split(binary, binary) :: {[binary], binary}
  def split(partial, data) do
    [rest | complete] = (partial <> data) |> String.split("\n") |> Enum.reverse()
    {Enum.reverse(complete), rest}
  end
end

defmodule TetherTest do
  use ExUnit.Case, async: true
  doctest Tether
  doctest Tether.Options
  doctest Tether.Process
end

// The pod sandbox's pause process for the real node (make node-up): no dependencies.
module gossamer.invalid/tools/pause

go 1.22.0

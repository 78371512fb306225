package eventlog

// The queries of Read and History, for tests of their plans.
var (
	ReadSQL    = readSQL
	HistorySQL = historySQL
)

# Start the meter: settings, board, app. Everything else lives in firmware/ and drivers/.
import firmware.start

firmware.start.main()

"""The tracking front end, a base layer every stage uses: streamed video reading, mediapipe tracking, the shared
face crop, filters over time, head pose, mediapipe <-> template correspondence."""

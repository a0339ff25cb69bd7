//! Recurring schedules as `getSchedules()` returns them.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::{
    admin::schedules::{Recurring, Spec, StoredSchedule},
    content_type,
};

/// A recurring schedule as `getSchedules()` returns it before the shim decodes the JSON.
#[napi(object)]
pub struct NativeSchedule {
    /// Its name.
    pub name: String,
    /// The cron expression, for a cron schedule.
    pub cron: Option<String>,
    /// The interval in ms, for an `every` schedule.
    pub every: Option<f64>,
    /// The time zone of a cron schedule.
    pub time_zone: Option<String>,
    /// The task's data as JSON text (for a JSON task).
    pub data: String,
    /// The task's data as bytes, when its content type is not JSON.
    pub raw_data: Option<Buffer>,
    /// How the data is encoded.
    pub content_type: String,
    /// The name of the tasks it enqueues, if any.
    pub task_name: Option<String>,
    /// The task's metadata as JSON object text, if any.
    pub metadata: Option<String>,
    /// The next run, ms since the epoch, when the server says.
    pub next_run: Option<f64>,
}

/// `stored` as JavaScript sees it.
pub(super) fn native_schedule(stored: StoredSchedule) -> NativeSchedule {
    let (cron, every, time_zone) = match stored.recurring {
        Some(Recurring {
            spec: Spec::Cron(cron),
            time_zone,
        }) => (Some(cron), None, time_zone),
        Some(Recurring {
            spec: Spec::Every(every),
            time_zone,
        }) => (None, Some(every.as_millis() as f64), time_zone),
        None => (None, None, None),
    };
    let task = stored.task;
    let json = content_type::is_json(&task.content_type);
    NativeSchedule {
        name: stored.name,
        cron,
        every,
        time_zone,
        data: if json {
            String::from_utf8_lossy(&task.data).into_owned()
        } else {
            String::new()
        },
        raw_data: (!json).then(|| Buffer::from(task.data.to_vec())),
        content_type: task.content_type,
        task_name: (!task.name.is_empty()).then_some(task.name),
        metadata: (!task.metadata.is_empty())
            .then(|| String::from_utf8_lossy(&task.metadata).into_owned()),
        next_run: stored.next_run_ms.map(|ms| ms as f64),
    }
}

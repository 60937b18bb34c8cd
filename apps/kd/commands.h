#pragma once
// Each kd sub-command registers itself on the CLI11 app; main() only dispatches and maps errors
// to exit codes.
namespace CLI {
class App;
}

namespace kd::cli {

void add_train_commands(CLI::App& app);  // train, distill
void add_eval_command(CLI::App& app);
void add_data_commands(CLI::App& app);  // data split, data info
void add_models_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_serve_command(CLI::App& app);   // only with KD_WITH_SERVE
void add_launch_command(CLI::App& app);  // data-parallel ranks on this machine
void add_report_command(CLI::App& app);

}  // namespace kd::cli
